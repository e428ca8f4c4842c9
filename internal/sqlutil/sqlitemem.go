package sqlutil

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// SQLite's memory in a process (every connection's page cache, prepared statements and
// parsed schema, for every database) comes from one allocator, and its page caches share
// one least-recently-used list (this build of SQLite has SQLITE_ENABLE_MEMORY_MANAGEMENT).
// SQLite counts that memory, and can hold it under a soft limit, only when its memory
// accounting is on; the build turns it off by default (SQLITE_DEFAULT_MEMSTATUS=0), and it
// can be turned on only before SQLite initialises, which the first connection does. init
// turns it on. Over the limit, a connection that needs a page takes the least recently
// used unpinned page of any connection instead of allocating one: without it, each of a
// monolith's ~70 connections grows its cache to cache_size (2 MB) as the files grow.
var memstatusErr error

func init() {
	tls := libc.NewTLS()
	defer tls.Close()
	va := libc.NewVaList(int32(1))
	defer libc.Xfree(tls, va)
	if rc := sqlite3.Xsqlite3_config(tls, sqlite3.SQLITE_CONFIG_MEMSTATUS, va); rc != sqlite3.SQLITE_OK {
		memstatusErr = fmt.Errorf("turn on SQLite's memory accounting: SQLite error %d (it was initialised before)", rc)
	}
}

// SetSQLiteMemoryLimit sets the soft limit on SQLite's memory in this process, in bytes (0:
// none), and returns the one it replaces.
func SetSQLiteMemoryLimit(bytes int64) (int64, error) {
	if memstatusErr != nil {
		return 0, memstatusErr
	}
	tls := libc.NewTLS()
	defer tls.Close()
	return sqlite3.Xsqlite3_soft_heap_limit64(tls, max(bytes, 0)), nil
}

// SQLiteMemory is SQLite's memory in this process now: all of it, and the part that holds
// cached pages.
func SQLiteMemory() (total, pages int64) {
	status.mu.Lock()
	defer status.mu.Unlock()
	tls := libc.NewTLS()
	defer tls.Close()
	total = sqlite3.Xsqlite3_memory_used(tls)
	// The page caches allocate from the general allocator (no SQLITE_CONFIG_PAGECACHE
	// buffer), which SQLite counts as page cache overflow.
	sqlite3.Xsqlite3_status64(tls, sqlite3.SQLITE_STATUS_PAGECACHE_OVERFLOW,
		uintptr(unsafe.Pointer(&status.buf[0])), uintptr(unsafe.Pointer(&status.buf[1])), 0)
	return total, status.buf[0]
}

// status is where sqlite3_status64 writes: a package variable, which the Go runtime never
// moves (a local's address on a goroutine stack could move while SQLite writes to it).
var status struct {
	mu  sync.Mutex
	buf [2]int64 // current, high-water
}

// SQLiteMemoryCollector reports SQLite's memory in this process as
// dendrite_sqlite_memory_bytes{kind="total"|"page_cache"} and its soft limit as
// dendrite_sqlite_memory_limit_bytes (0: none), read when /metrics is scraped.
func SQLiteMemoryCollector() prometheus.Collector {
	return sqliteMemory{
		used: prometheus.NewDesc("dendrite_sqlite_memory_bytes",
			"SQLite's memory in this process (every connection to every SQLite database): all of it, and the part holding cached pages.",
			[]string{"kind"}, nil),
		limit: prometheus.NewDesc("dendrite_sqlite_memory_limit_bytes",
			"The soft limit on SQLite's memory in this process (global.cache.sqlite_max_bytes; 0: none).", nil, nil),
	}
}

type sqliteMemory struct{ used, limit *prometheus.Desc }

func (c sqliteMemory) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.used
	ch <- c.limit
}

func (c sqliteMemory) Collect(ch chan<- prometheus.Metric) {
	total, pages := SQLiteMemory()
	ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(total), "total")
	ch <- prometheus.MustNewConstMetric(c.used, prometheus.GaugeValue, float64(pages), "page_cache")
	tls := libc.NewTLS()
	defer tls.Close()
	// A negative argument reads the limit without changing it.
	ch <- prometheus.MustNewConstMetric(c.limit, prometheus.GaugeValue, float64(sqlite3.Xsqlite3_soft_heap_limit64(tls, -1)))
}
