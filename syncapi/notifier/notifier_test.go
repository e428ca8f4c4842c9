package notifier_test

import (
	"context"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/syncapi/notifier"
	"github.com/matrix-org/dendrite/syncapi/storage"
)

// TestFirstWaitSeesEarlierChange: a change for a user committed after their request read
// the database but before the request's first Wait (the user had no stream yet, so the
// wake-up was not recorded) ends the Wait at once instead of after the timeout.
func TestFirstWaitSeesEarlierChange(t *testing.T) {
	n := notifier.New("x", nil)
	n.Notify(&storage.Applied{Stream: storage.StreamRoomEvents, Users: []string{"@a:x"}, Position: 5})
	if !n.Wait(context.Background(), "@a:x", 4, time.Minute) {
		t.Fatal("the wait slept through a change committed before it")
	}
	// With nothing newer than since, a wait times out.
	if n.Wait(context.Background(), "@a:x", 5, 10*time.Millisecond) {
		t.Fatal("woken with nothing new")
	}
}
