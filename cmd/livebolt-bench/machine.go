package main

import (
	"bufio"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
)

// Machine describes where the benchmark ran.
type Machine struct {
	Cores          int    `json:"cores"`
	CPUModel       string `json:"cpuModel,omitempty"`
	MemTotalBytes  uint64 `json:"memTotalBytes"`
	GoVersion      string `json:"goVersion"`
	GOOS           string `json:"goos"`
	GOARCH         string `json:"goarch"`
	GOMAXPROCS     int    `json:"gomaxprocs"`
	Kernel         string `json:"kernel,omitempty"`
	FileLimit      uint64 `json:"fileLimit"`
	FileLimitHard  uint64 `json:"fileLimitHard"`
	FileLimitError string `json:"fileLimitError,omitempty"`
}

func describeMachine() Machine {
	m := Machine{
		Cores:      runtime.NumCPU(),
		GoVersion:  runtime.Version(),
		GOOS:       runtime.GOOS,
		GOARCH:     runtime.GOARCH,
		GOMAXPROCS: runtime.GOMAXPROCS(0),
	}
	if kb, err := procField("/proc/meminfo", "MemTotal"); err == nil {
		m.MemTotalBytes = kb << 10
	}
	m.CPUModel = cpuModel()
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(name) == "model name" {
			return strings.TrimSpace(value)
		}
	}
	return ""
}

// procField reads a "Name:   1234 kB" line of a /proc file and returns the
// number.
func procField(path, name string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || key != name {
			continue
		}
		fields := strings.Fields(rest)
		if len(fields) == 0 {
			break
		}
		return strconv.ParseUint(fields[0], 10, 64)
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return 0, fmt.Errorf("%s has no %s line", path, name)
}

// raiseFileLimit sets the soft RLIMIT_NOFILE to the hard limit and returns
// both after the change.
func raiseFileLimit() (soft, hard uint64, err error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, 0, fmt.Errorf("read the file limit: %w", err)
	}
	if lim.Cur < lim.Max {
		want := lim
		want.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
			return lim.Cur, lim.Max, fmt.Errorf("raise the file limit from %d to %d: %w", lim.Cur, lim.Max, err)
		}
		lim = want
	}
	return lim.Cur, lim.Max, nil
}

// memSample is the process's memory after a full collection.
type memSample struct {
	HeapInuse  uint64 `json:"heapInuseBytes"`
	StackInuse uint64 `json:"stackInuseBytes"`
	RSS        uint64 `json:"rssBytes"`
	Goroutines int    `json:"goroutines"`
}

// sampleMemory collects garbage, returns freed memory to the OS so that RSS
// drops too, and reads heap in use and VmRSS. The first collection empties
// sync.Pool caches into their victim caches, the second frees those.
func sampleMemory() (memSample, error) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	kb, err := procField("/proc/self/status", "VmRSS")
	if err != nil {
		return memSample{}, fmt.Errorf("read VmRSS: %w", err)
	}
	return memSample{
		HeapInuse: ms.HeapInuse, StackInuse: ms.StackInuse, RSS: kb << 10,
		Goroutines: runtime.NumGoroutine(),
	}, nil
}

// perClient returns (after-before)/n, which may be negative when memory
// was returned between the samples.
func perClient(before, after uint64, n int) float64 {
	if n == 0 {
		return 0
	}
	return (float64(after) - float64(before)) / float64(n)
}
