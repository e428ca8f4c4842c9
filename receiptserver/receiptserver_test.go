package receiptserver_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/receiptserver"
	"github.com/matrix-org/dendrite/receiptserver/api"
)

// TestReceiptsMoveOnlyForward: a receipt for an older event, or the same one again, is not
// announced; public, private and threaded receipts move independently.
func TestReceiptsMoveOnlyForward(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		log := test.EmbeddedLog(t, 4)
		out := test.FollowTopic(t, log, "out")
		s, err := receiptserver.New(ctx, receiptserver.Deps{Cfg: &config.Defaults().ReceiptServer, DB: db, Log: log, InputTopic: "in", OutputTopic: "out", Logger: logrus.NewEntry(logrus.New())})
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = s.Run(ctx) }() // ends with ctx
		in := &api.Producer{Log: log, Topic: "in"}
		send := func(typ, eventID, thread string, depth int64) {
			t.Helper()
			err := in.InputReceipt(ctx, &api.InputReceiptEvent{RoomID: "!r:x", UserID: "@a:x", Type: typ, EventID: eventID, ThreadID: thread, Depth: depth, TS: 1})
			if err != nil {
				t.Fatal(err)
			}
		}
		send(api.ReceiptRead, "$5", "", 5)
		send(api.ReceiptRead, "$3", "", 3)        // backwards: ignored
		send(api.ReceiptRead, "$5", "", 5)        // the same: ignored
		send(api.ReceiptReadPrivate, "$3", "", 3) // another type moves on its own
		send(api.ReceiptRead, "$4", "main", 4)    // another thread too
		send(api.ReceiptRead, "$7", "", 7)        // forward
		send(api.ReceiptRead, "$9", "", 9)        // the marker for the end of the test
		var got []string
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			got = nil
			for _, rec := range out.Wait(t, 0, time.Second) {
				var o api.OutputReceiptEvent
				if err := json.Unmarshal(rec.Value, &o); err != nil {
					t.Fatal(err)
				}
				got = append(got, o.Type+"/"+o.ThreadID+"/"+o.EventID)
			}
			if len(got) > 0 && got[len(got)-1] == "m.read//$9" {
				break
			}
		}
		want := []string{"m.read//$5", "m.read.private//$3", "m.read/main/$4", "m.read//$7", "m.read//$9"}
		if len(got) != len(want) {
			t.Fatalf("announced %v, want %v", got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("announced %v, want %v", got, want)
			}
		}
	})
}
