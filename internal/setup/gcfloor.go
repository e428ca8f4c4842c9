package setup

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
)

// maxGCPercent bounds the GOGC the heap floor sets: with a live heap of a few hundred KiB
// (a test, a process that has just started) the floor alone decides the goal anyway.
const maxGCPercent = 100_000

// gcFloor is the state of SetGCHeapFloor: one per process, as GOGC is.
var gcFloor struct {
	mu sync.Mutex
	// floor is the heap goal's floor in bytes; 0 when off.
	floor uint64
	// base is GOGC as it was when the floor was turned on: the percentage used whenever
	// it gives a goal over the floor, and restored when the floor is turned off.
	base int
	// current is the GOGC the floor last set.
	current int
	// armed says a cleanup is waiting for the next collection.
	armed bool
}

// SetGCHeapFloor makes the garbage collector let the heap grow to at least floor bytes
// before it collects (global.gc_heap_floor), and returns the previous floor; 0 turns it off
// and restores GOGC.
//
// At GOGC 100 the collector runs whenever the heap has doubled its live data, and at
// least every 4 MiB. A process whose live heap is a few MiB (a polylith component, a
// roomserver shard) therefore collects every few MiB it allocates, and pays each
// collection's fixed cost that often. After every collection the floor sets GOGC so that
// the next goal is the larger of the floor and what GOGC would give; a process whose live
// heap is over half the floor keeps its GOGC. The Go runtime's soft memory limit
// (global.memory_limit) still applies above it. With GOGC off (negative) it does nothing.
func SetGCHeapFloor(floor int64) int64 {
	gcFloor.mu.Lock()
	defer gcFloor.mu.Unlock()
	prev := int64(gcFloor.floor)
	switch {
	case floor <= 0 && prev > 0:
		debug.SetGCPercent(gcFloor.base)
		gcFloor.floor = 0
	case floor > 0 && prev == 0:
		gcFloor.base = debug.SetGCPercent(100)
		debug.SetGCPercent(gcFloor.base)
		gcFloor.current = gcFloor.base
		if gcFloor.base < 0 {
			return prev
		}
		gcFloor.floor = uint64(floor)
		tuneGCLocked()
	case floor > 0:
		gcFloor.floor = uint64(floor)
		tuneGCLocked()
	}
	return prev
}

// tuneGC runs after every collection while the floor is on.
func tuneGC() {
	gcFloor.mu.Lock()
	defer gcFloor.mu.Unlock()
	gcFloor.armed = false
	if gcFloor.floor == 0 {
		return
	}
	tuneGCLocked()
}

// tuneGCLocked sets GOGC from the live heap the last collection marked, and arms a cleanup
// for the next collection unless one is waiting.
func tuneGCLocked() {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	live := sample[0].Value.Uint64()
	pct := gcFloor.base
	if need := maxGCPercent; live > 0 {
		if n := gcFloor.floor * 100 / live; n < maxGCPercent+100 {
			need = int(n) - 100
		}
		pct = max(pct, need)
	} else {
		pct = maxGCPercent
	}
	if pct != gcFloor.current {
		debug.SetGCPercent(pct)
		gcFloor.current = pct
	}
	if !gcFloor.armed {
		gcFloor.armed = true
		// An object with a pointer is never batched by the tiny allocator, so its cleanup
		// runs after the first collection that finds it unreachable: the next one.
		runtime.AddCleanup(&gcSentinel{}, func(struct{}) { tuneGC() }, struct{}{})
	}
}

// gcSentinel is the garbage each collection finds, to run tuneGC after it.
type gcSentinel struct{ _ *byte }
