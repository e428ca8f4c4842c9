// Package caching holds the in-memory caches of every component. Each cache is bounded by
// an estimate of the bytes it holds (not by its number of entries, since an entry may be a
// 200-byte member event or a 60 KiB power-levels event) and reports its size, hits, misses
// and evictions as Prometheus metrics labelled with the cache's name. The byte budgets
// come from the operator's `global.cache.max_bytes`, split between a process's caches by
// their owners (see Budget).
package caching

import (
	"github.com/maypok86/otter/v2"
	"github.com/maypok86/otter/v2/stats"
	"github.com/prometheus/client_golang/prometheus"
)

// EntryOverhead is the estimated bytes one entry costs beyond its key and value: the
// cache's own node, hash table slot and eviction-policy bookkeeping.
const EntryOverhead = 96

// Cache is a concurrency-safe map bounded by the estimated bytes of its entries. When an
// insertion takes it over its budget it evicts the entries least likely to be used again
// (W-TinyLFU). It never holds more than a few entries over the budget.
type Cache[K comparable, V any] struct {
	name     string
	maxBytes int64
	c        *otter.Cache[K, V]
	counter  *stats.Counter
}

// New makes a cache named name (the metric label) that holds at most maxBytes, as
// estimated by weigh for each entry; weigh should count what the key and value keep
// reachable, EntryOverhead is added to it. A maxBytes under 1 KiB is raised to 1 KiB.
// reg, when not nil, gets the cache's metrics.
func New[K comparable, V any](name string, maxBytes int64, weigh func(K, V) int, reg prometheus.Registerer) *Cache[K, V] {
	maxBytes = max(maxBytes, 1<<10)
	counter := stats.NewCounter()
	c := otter.Must(&otter.Options[K, V]{
		MaximumWeight: uint64(maxBytes),
		Weigher: func(k K, v V) uint32 {
			return uint32(min(weigh(k, v)+EntryOverhead, 1<<31))
		},
		StatsRecorder: counter,
	})
	out := &Cache[K, V]{name: name, maxBytes: maxBytes, c: c, counter: counter}
	if reg != nil {
		reg.MustRegister(newCollector(out))
	}
	return out
}

// Get returns the value cached for k.
func (c *Cache[K, V]) Get(k K) (V, bool) {
	return c.c.GetIfPresent(k)
}

// Put caches v for k, replacing what was there.
func (c *Cache[K, V]) Put(k K, v V) {
	c.c.Set(k, v)
}

// PutIfAbsent caches v for k unless k already has a value, and returns the value k has
// afterwards.
func (c *Cache[K, V]) PutIfAbsent(k K, v V) V {
	got, _ := c.c.SetIfAbsent(k, v)
	return got
}

// Delete forgets k.
func (c *Cache[K, V]) Delete(k K) {
	c.c.Invalidate(k)
}

// Bytes is the estimated size of what the cache holds now.
func (c *Cache[K, V]) Bytes() int64 {
	return int64(c.c.WeightedSize())
}

// Len is about the number of entries the cache holds now (it may count evicted entries
// until the cache's next maintenance, which runs with later operations).
func (c *Cache[K, V]) Len() int {
	return c.c.EstimatedSize()
}

// DefaultBudget is global.cache.max_bytes's default. The caches are live heap, and at the
// Go runtime's default GOGC each MiB in them costs about two of RSS. A small server fills
// a fraction of it (the soak benchmark's 100 rooms and 2,000 users, 7 MiB); 32 MiB keeps
// what a monolith that joins large federated rooms adds to its RSS near 64 MiB.
const DefaultBudget Budget = 32 << 20

// Budget is a process's cache budget in bytes (`global.cache.max_bytes`), from which each
// component takes fixed shares for its caches. The zero Budget is DefaultBudget.
type Budget int64

// Share returns fraction (0 to 1) of the budget.
func (b Budget) Share(fraction float64) int64 {
	if b <= 0 {
		b = DefaultBudget
	}
	return int64(float64(b) * fraction)
}

// collector reads a cache's figures when /metrics is scraped, so the cache's hot path
// touches no Prometheus instrument. Its descriptions carry the cache's name as a constant
// label, so that several caches register on one registry.
type collector[K comparable, V any] struct {
	c                                                 *Cache[K, V]
	bytes, maxBytes, entries, hits, misses, evictions *prometheus.Desc
}

func newCollector[K comparable, V any](c *Cache[K, V]) *collector[K, V] {
	labels := prometheus.Labels{"cache": c.name}
	d := func(name, help string) *prometheus.Desc { return prometheus.NewDesc(name, help, nil, labels) }
	return &collector[K, V]{c: c,
		bytes:     d("dendrite_cache_bytes", "Estimated bytes held by the cache."),
		maxBytes:  d("dendrite_cache_max_bytes", "The cache's byte budget."),
		entries:   d("dendrite_cache_entries", "Entries held by the cache."),
		hits:      d("dendrite_cache_hits_total", "Lookups the cache answered."),
		misses:    d("dendrite_cache_misses_total", "Lookups the cache could not answer."),
		evictions: d("dendrite_cache_evictions_total", "Entries evicted to stay within the budget."),
	}
}

func (col *collector[K, V]) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{col.bytes, col.maxBytes, col.entries, col.hits, col.misses, col.evictions} {
		ch <- d
	}
}

func (col *collector[K, V]) Collect(ch chan<- prometheus.Metric) {
	c := col.c
	s := c.counter.Snapshot()
	ch <- prometheus.MustNewConstMetric(col.bytes, prometheus.GaugeValue, float64(c.Bytes()))
	ch <- prometheus.MustNewConstMetric(col.maxBytes, prometheus.GaugeValue, float64(c.maxBytes))
	ch <- prometheus.MustNewConstMetric(col.entries, prometheus.GaugeValue, float64(c.Len()))
	ch <- prometheus.MustNewConstMetric(col.hits, prometheus.CounterValue, float64(s.Hits))
	ch <- prometheus.MustNewConstMetric(col.misses, prometheus.CounterValue, float64(s.Misses))
	ch <- prometheus.MustNewConstMetric(col.evictions, prometheus.CounterValue, float64(s.Evictions))
}
