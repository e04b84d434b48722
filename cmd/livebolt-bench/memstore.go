package main

import (
	"github.com/livebolt/livebolt/storage"
	"github.com/livebolt/livebolt/storage/memstore"
)

// newMemoryStore builds the store of the "in-memory" throughput target:
// persistence off, behind the same storage.Store interface as bbolt. It is
// the only place that names the in-memory package. Set it to nil to run
// without that target, and the report notes that it was skipped.
var newMemoryStore func() storage.Store = func() storage.Store { return memstore.New() }
