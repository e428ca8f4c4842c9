package roomserver_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/roomserver"
	"github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/roomserver/inthttp"
)

// TestInputWaitTimeout: room_server.input_wait_timeout bounds the writer's wait for the
// shard's verdict, directly (monolith) and over internal HTTP (polylith): a shard that does
// not answer in time gives the writer api.ErrInputTimeout (504 M_UNKNOWN), and the event
// stays in the log, processed once the shard runs.
func TestInputWaitTimeout(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		log, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 4})
		if err != nil {
			t.Fatal(err)
		}
		defer log.Close()
		logger := logrus.New()
		logger.SetLevel(logrus.WarnLevel)
		key := roomtest.NewKey(t)
		rs, err := roomserver.New(ctx, roomserver.Deps{
			Cfg: &config.RoomServer{Shards: 1}, ServerName: serverName, KeyID: "ed25519:test", PrivateKey: key,
			DB: db, Log: log, InputTopic: "in", OutputTopic: "out", Logger: logrus.NewEntry(logger),
		})
		if err != nil {
			t.Fatal(err)
		}
		router := mux.NewRouter()
		inthttp.Register(router, rs.API(), ihttp.ServerOptions{Logger: logrus.NewEntry(logger)})
		hs := httptest.NewServer(router)
		defer hs.Close()
		waits := map[string]api.WaitAPI{"monolith": rs.API(), "polylith": inthttp.NewClient(hs.URL, ihttp.ClientOptions{})}
		create := roomtest.CreateEvent(t, key, serverName, gomatrixserverlib.RoomVersionV10, "@alice:"+serverName, "!wait:"+serverName)
		in := api.InputRoomEvents{RoomID: create.RoomID().String(), RoomVersion: string(gomatrixserverlib.RoomVersionV10),
			Events: []api.InputRoomEvent{{Kind: api.KindNew, Event: &api.Event{PDU: create}}}}
		var merr *matrixerr.Error
		for mode, wait := range waits {
			// The roomserver does not run yet: no verdict can come.
			input := &api.Input{Log: log, Topic: "in", Wait: wait, Timeout: 200 * time.Millisecond}
			_, err := input.InputRoomEvents(ctx, &api.InputRoomEventsRequest{Input: in})
			if !errors.As(err, &merr) || merr.Status != http.StatusGatewayTimeout || merr.Code != "M_UNKNOWN" {
				t.Fatalf("%s: want 504 M_UNKNOWN after the input wait timeout, got %v", mode, err)
			}
		}
		done := make(chan error, 1)
		go func() { done <- rs.Run(ctx) }()
		defer func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("roomserver run: %v", err)
			}
		}()
		// The timed-out inputs were processed once the shard ran: the room they created exists,
		// so the same create is refused now.
		input := &api.Input{Log: log, Topic: "in", Wait: rs.API(), Timeout: 30 * time.Second}
		res, err := input.InputRoomEvents(ctx, &api.InputRoomEventsRequest{Input: in})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Results) != 1 || res.Results[0].Err == nil || res.Results[0].Err.Code != "M_ROOM_IN_USE" {
			t.Fatalf("resubmitted create: %+v", res.Results)
		}
	})
}
