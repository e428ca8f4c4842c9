package caching

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestCacheStaysWithinItsBytes fills a 64 KiB cache with 1 KiB values: it keeps about 64 KiB,
// not every entry, answers for what it kept and counts hits, misses and evictions.
func TestCacheStaysWithinItsBytes(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := New("test", 64<<10, func(k int, v []byte) int { return len(v) }, reg)
	for i := range 1000 {
		c.Put(i, make([]byte, 1<<10))
		if b := c.Bytes(); b > 64<<10 {
			t.Fatalf("after %d puts the cache holds %d bytes, over its 64 KiB", i+1, b)
		}
	}
	c.c.CleanUp() // Len counts entries pending removal until the cache's next maintenance
	kept := c.Len()
	if kept < 20 || kept > 64 {
		t.Fatalf("cache holds %d entries of ~1.1 KiB in 64 KiB", kept)
	}
	hits := 0
	for i := range 1000 {
		if _, ok := c.Get(i); ok {
			hits++
		}
	}
	if hits != kept {
		t.Fatalf("%d lookups hit, cache holds %d", hits, kept)
	}
	want := fmt.Sprintf(`
# HELP dendrite_cache_evictions_total Entries evicted to stay within the budget.
# TYPE dendrite_cache_evictions_total counter
dendrite_cache_evictions_total{cache="test"} %d
# HELP dendrite_cache_hits_total Lookups the cache answered.
# TYPE dendrite_cache_hits_total counter
dendrite_cache_hits_total{cache="test"} %d
# HELP dendrite_cache_misses_total Lookups the cache could not answer.
# TYPE dendrite_cache_misses_total counter
dendrite_cache_misses_total{cache="test"} %d
`, 1000-kept, kept, 1000-kept)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"dendrite_cache_evictions_total", "dendrite_cache_hits_total", "dendrite_cache_misses_total"); err != nil {
		t.Fatal(err)
	}
}

// TestCachesShareARegistry: two caches of one process register on the same registry, each
// under its own label, and Delete and PutIfAbsent behave as maps do.
func TestCachesShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := New("a", 1<<20, func(k, v string) int { return len(k) + len(v) }, reg)
	b := New("b", 1<<20, func(k, v string) int { return len(k) + len(v) }, reg)
	a.Put("k", "1")
	if got := a.PutIfAbsent("k", "2"); got != "1" {
		t.Fatalf("PutIfAbsent over a value returned %q", got)
	}
	if got := b.PutIfAbsent("k", "2"); got != "2" {
		t.Fatalf("PutIfAbsent into an empty cache returned %q", got)
	}
	a.Delete("k")
	if _, ok := a.Get("k"); ok {
		t.Fatal("deleted key still cached")
	}
	if v, ok := b.Get("k"); !ok || v != "2" {
		t.Fatalf("other cache lost its key: %q %v", v, ok)
	}
	if n, err := testutil.GatherAndCount(reg, "dendrite_cache_entries"); err != nil || n != 2 {
		t.Fatalf("dendrite_cache_entries series: %d, %v", n, err)
	}
}
