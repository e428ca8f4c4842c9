package roomserver_test

import (
	"context"
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
// ID), never the other message's event IDs as its own.
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
			t.Fatalf("the message after the reset got %+v: another message's results", res.Results)
		}
		if !errors.As(err, &merr) || merr.Status != http.StatusServiceUnavailable {
			t.Fatalf("the message after the reset: %v, want 503", err)
		}
	})
}
