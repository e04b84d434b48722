package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

func envOf(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

func TestParseConfigDefaults(t *testing.T) {
	cfg, err := parseConfig(nil, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.addr != "127.0.0.1:3000" || cfg.data != "data" || cfg.maxAge != 30*time.Minute || cfg.maxAttempts != 3 {
		t.Errorf("defaults %+v", cfg)
	}
	if cfg.ageSweep != "@every 5m" || cfg.failedSweep != "@every 1m" {
		t.Errorf("sweep defaults %q %q", cfg.ageSweep, cfg.failedSweep)
	}
}

func TestParseConfigFlagWinsOverEnv(t *testing.T) {
	env := envOf(map[string]string{"LIVEBOLT_ADDR": "127.0.0.1:4000", "LIVEBOLT_MAX_AGE": "5m", "LIVEBOLT_MAX_ATTEMPTS": "7"})
	cfg, err := parseConfig([]string{"--addr", "127.0.0.1:5000"}, env, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.addr != "127.0.0.1:5000" {
		t.Errorf("addr = %q, want the flag's value", cfg.addr)
	}
	if cfg.maxAge != 5*time.Minute || cfg.maxAttempts != 7 {
		t.Errorf("environment not applied: max-age %s, max-attempts %d", cfg.maxAge, cfg.maxAttempts)
	}
}

func TestParseConfigRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{"duration without unit", []string{"--max-age", "30"}, nil, "use a number with a unit"},
		{"env duration", nil, map[string]string{"LIVEBOLT_MAX_AGE": "soon"}, "LIVEBOLT_MAX_AGE"},
		{"env integer", nil, map[string]string{"LIVEBOLT_MAX_ATTEMPTS": "abc"}, `LIVEBOLT_MAX_ATTEMPTS="abc": parse error; use a whole number, such as 3`},
		{"env number", nil, map[string]string{"LIVEBOLT_MAX_MESSAGES_PER_SECOND": "fast"}, "use a number, such as 100"},
		{"zero max-age", []string{"--max-age", "0s"}, nil, "--max-age"},
		{"zero attempts", []string{"--max-attempts", "0"}, nil, "--max-attempts"},
		{"zero migration timeout", []string{"--migration-timeout", "0s"}, nil, "--migration-timeout"},
		{"bad cron", []string{"--age-sweep", "every 5m"}, nil, "--age-sweep"},
		{"bad failed cron", nil, map[string]string{"LIVEBOLT_FAILED_SWEEP": "* *"}, "--failed-sweep"},
		{"origin without scheme", []string{"--allowed-origins", "http://ok.example,localhost:3000"}, nil, `"localhost:3000"`},
		{"origin with path", []string{"--allowed-origins", "http://a.example/app"}, nil, "scheme://host:port"},
		{"log format", []string{"--log-format", "xml"}, nil, "--log-format"},
		{"log level", []string{"--log-level", "loud"}, nil, "--log-level"},
		{"small frame", []string{"--max-frame-bytes", "10"}, nil, "--max-frame-bytes"},
		{"stray argument", []string{"serve"}, nil, `"serve"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseConfig(tc.args, envOf(tc.env), io.Discard)
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %s", err, tc.want)
			}
		})
	}
}

func TestParseConfigAcceptsOrigins(t *testing.T) {
	cfg, err := parseConfig([]string{"--allowed-origins", " http://localhost:3000 , https://app.example ,*"}, envOf(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got := splitList(cfg.allowedOrigins); len(got) != 3 || got[0] != "http://localhost:3000" || got[2] != "*" {
		t.Errorf("origins %q", got)
	}
}
