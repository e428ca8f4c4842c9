package setup

import (
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

var gcFloorSink []byte

// collectionsWhileAllocating reports how many collections the runtime ran while this test
// allocated 512 MiB of garbage in 64 KiB pieces.
func collectionsWhileAllocating() uint32 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for range 512 * 16 {
		gcFloorSink = make([]byte, 64<<10)
	}
	runtime.ReadMemStats(&after)
	return after.NumGC - before.NumGC
}

func gogc() uint64 {
	s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// waitGOGC collects until the floor has set GOGC as want says (it does so after a
// collection, on the runtime's cleanup goroutine), or fails.
func waitGOGC(t *testing.T, what string, want func(uint64) bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !want(gogc()); {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC %d: want %s", gogc(), what)
		}
		runtime.GC()
		time.Sleep(10 * time.Millisecond)
	}
}

// TestGCHeapFloor: with a 64 MiB floor, a process whose live heap is a few MiB collects
// far less often while it allocates; a live heap over half the floor keeps GOGC; turning
// the floor off restores GOGC.
func TestGCHeapFloor(t *testing.T) {
	// A monolith started by an earlier test set the configured floor.
	configured := SetGCHeapFloor(0)
	t.Cleanup(func() { SetGCHeapFloor(configured) })
	base := gogc()
	without := collectionsWhileAllocating()
	if prev := SetGCHeapFloor(64 << 20); prev != 0 {
		t.Fatalf("previous floor %d, want 0", prev)
	}
	waitGOGC(t, "raised over the base", func(p uint64) bool { return p > base })
	with := collectionsWhileAllocating()
	t.Logf("collections while allocating 512 MiB: %d without the floor, %d with it (GOGC %d)", without, with, gogc())
	if with*4 > without {
		t.Errorf("%d collections with a 64 MiB floor, %d without: want at most a quarter", with, without)
	}

	live := make([][]byte, 48)
	for i := range live {
		live[i] = make([]byte, 1<<20)
		live[i][0] = 1
	}
	waitGOGC(t, "the base with a live heap over half the floor", func(p uint64) bool { return p == base })
	runtime.KeepAlive(live)

	if prev := SetGCHeapFloor(0); prev != 64<<20 {
		t.Fatalf("previous floor %d, want %d", prev, 64<<20)
	}
	if got := gogc(); got != base {
		t.Fatalf("GOGC %d after turning the floor off, want %d", got, base)
	}
}
