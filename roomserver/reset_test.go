package roomserver_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/roomserver/api"
)

// TestInputWaitAfterLogReset deletes the input topic under a running roomserver on Kafka
// (both engines): the next message lands at an offset whose result the roomserver still
// remembers from another message. The writer must get 503 (retry with the transaction
// ID) or, once the roomserver went on with the new topic, its own event; never the other
// message's event IDs as its own.
func TestInputWaitAfterLogReset(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			t.Fatal(err)
		}
		defer cluster.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		quiet := logrus.New()
		quiet.SetOutput(io.Discard)
		log, err := eventlog.NewKafka(ctx, eventlog.KafkaConfig{Config: eventlog.Config{DefaultPartitions: 1, Logger: logrus.NewEntry(quiet)},
			Brokers: cluster.ListenAddrs(), Topics: []string{"in", "out"}})
		if err != nil {
			t.Fatal(err)
		}
		h := startOn(t, db, roomtest.NewKey(t), log)
		defer h.stop()
		alice := "@alice:" + serverName
		roomID := h.newRoom(gomatrixserverlib.RoomVersionV10, alice)
		for range 2 {
			h.submit(api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(alice, "m.room.message", nil, map[string]string{"body": "before"})}})
		}
		sc := sarama.NewConfig()
		sc.Version = sarama.V3_6_0_0
		admin, err := sarama.NewClusterAdmin(cluster.ListenAddrs(), sc)
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close()
		if err := admin.DeleteTopic("in"); err != nil {
			t.Fatal(err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
		defer wcancel()
		res, err := h.input.InputRoomEvents(wctx, &api.InputRoomEventsRequest{Input: api.InputRoomEvents{RoomID: roomID,
			Events: []api.InputRoomEvent{roomtest.Proto(alice, "m.room.message", nil, map[string]string{"body": "after"})}}})
		var merr *matrixerr.Error
		if err == nil {
			if body := h.body(res.Results[0].EventID); body != "after" {
				t.Fatalf("the message after the reset got %+v, an event with body %q: another message's results", res.Results, body)
			}
			return
		}
		if !errors.As(err, &merr) || merr.Status != http.StatusServiceUnavailable {
			t.Fatalf("the message after the reset: %v, want 503", err)
		}
	})
}

// body is the body of a stored message event.
func (h *harness) body(eventID string) string {
	h.t.Helper()
	res, err := h.rs.API().QueryEventsByID(context.Background(), &api.QueryEventsByIDRequest{EventIDs: []string{eventID}})
	if err != nil || len(res.Events) != 1 {
		h.t.Fatalf("event %s: %v", eventID, err)
	}
	var c struct {
		Body string `json:"body"`
	}
	_ = json.Unmarshal(res.Events[0].Content(), &c) // a message without a string body has none
	return c.Body
}

// TestRetryAfterInputLogWiped wipes the input topic of a roomserver on Kafka (both
// engines). A message whose record was lost with the topic before the roomserver read it
// was never acknowledged: the client's retry with the same transaction ID succeeds, once.
// A message the roomserver applied but whose answer the writer never got (its wait was cut
// by the reset) is confirmed by the retry: the same transaction ID returns the original
// event ID. The roomserver goes on with the new topic by itself.
func TestRetryAfterInputLogWiped(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			t.Fatal(err)
		}
		defer cluster.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		quiet := logrus.New()
		quiet.SetOutput(io.Discard)
		// Each roomserver run has its own connection to the brokers (stop closes it).
		newLog := func() eventlog.Log {
			log, err := eventlog.NewKafka(ctx, eventlog.KafkaConfig{Config: eventlog.Config{DefaultPartitions: 1, Logger: logrus.NewEntry(quiet)},
				Brokers: cluster.ListenAddrs(), Topics: []string{"in", "out"}})
			if err != nil {
				t.Fatal(err)
			}
			return log
		}
		key := roomtest.NewKey(t)
		h := startOn(t, db, key, newLog())
		alice := "@alice:" + serverName
		roomID := h.newRoom(gomatrixserverlib.RoomVersionV10, alice)
		send := func(txn, body string) api.InputRoomEvents {
			ev := roomtest.Proto(alice, "m.room.message", nil, map[string]string{"body": body})
			ev.TxnID = &api.TransactionID{UserID: alice, DeviceID: "DEV", TransactionID: txn}
			return api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{ev}}
		}
		// Applied, never confirmed: the writer's record is processed, its answer lost.
		applied := h.submit(send("t-applied", "applied"))[0].EventID
		h.stop()
		// Lost: produced while the roomserver is down, and the topic deleted before it is back.
		writer := newLog()
		defer writer.Close() // nolint: errcheck // nothing to do about a failed close in a test
		if err := eventlog.ProduceJSON(ctx, writer, "in", roomID, send("t-lost", "lost")); err != nil {
			t.Fatal(err)
		}
		sc := sarama.NewConfig()
		sc.Version = sarama.V3_6_0_0
		admin, err := sarama.NewClusterAdmin(cluster.ListenAddrs(), sc)
		if err != nil {
			t.Fatal(err)
		}
		defer admin.Close()
		if err := admin.DeleteTopic("in"); err != nil {
			t.Fatal(err)
		}
		h = startOn(t, db, key, newLog())
		defer h.stop()
		retry := func(txn, body string) string {
			for {
				res, err := h.input.InputRoomEvents(ctx, &api.InputRoomEventsRequest{Input: send(txn, body)})
				if err == nil {
					if res.Results[0].Err != nil {
						t.Fatalf("retry of %s rejected: %v", txn, res.Results[0].Err)
					}
					return res.Results[0].EventID
				}
				var merr *matrixerr.Error
				if !errors.As(err, &merr) || merr.Status != http.StatusServiceUnavailable || ctx.Err() != nil {
					t.Fatalf("retry of %s: %v", txn, err)
				}
			}
		}
		if got := retry("t-applied", "applied"); got != applied {
			t.Fatalf("the retry of an applied message returned %s, want the original %s", got, applied)
		}
		lost := retry("t-lost", "lost")
		if h.body(lost) != "lost" {
			t.Fatalf("the retry of the lost message returned %s", lost)
		}
		if again := retry("t-lost", "lost"); again != lost {
			t.Fatalf("a second retry returned %s, want %s", again, lost)
		}
	})
}
