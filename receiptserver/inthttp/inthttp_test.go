package inthttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/receiptserver"
	"github.com/matrix-org/dendrite/receiptserver/api"
	"github.com/matrix-org/dendrite/receiptserver/inthttp"
)

// TestEveryMethodServed fails when a method is added to api.ServerAPI and not to Register.
func TestEveryMethodServed(t *testing.T) {
	srv := inthttp.Register(mux.NewRouter(), (*inthttp.Client)(nil), ihttp.ServerOptions{})
	want, err := ihttp.Methods(reflect.TypeFor[api.ServerAPI]())
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Methods(); !slices.Equal(got, want) {
		t.Fatalf("served %v, api.ServerAPI has %v", got, want)
	}
}

// TestReceiptWaitOverHTTP: a writer whose wait goes over internal HTTP (the polylith)
// acknowledges a receipt only once the receiptserver took it. While the receiptserver does
// not run, the wait ends at its timeout with 504 M_UNKNOWN; once it runs, the client's retry
// is acknowledged, and at that moment the receipt's move is already in the outbox, exactly
// once (QueryOutputRecords over HTTP, not polled).
func TestReceiptWaitOverHTTP(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		log := test.EmbeddedLog(t, 1)
		s, err := receiptserver.New(ctx, receiptserver.Deps{Cfg: &config.Defaults().ReceiptServer, DB: db, Log: log,
			InputTopic: "in", OutputTopic: "out", Logger: logrus.NewEntry(logrus.New())})
		if err != nil {
			t.Fatal(err)
		}
		client := inthttp.NewClient(test.InternalServer(t, func(r *mux.Router, o ihttp.ServerOptions) { inthttp.Register(r, s.API(), o) }),
			ihttp.ClientOptions{})
		in := &api.Producer{Log: log, Topic: "in", Wait: client}
		receipt := &api.InputReceiptEvent{RoomID: "!r:x", UserID: "@a:x", Type: api.ReceiptRead, EventID: "$1", Depth: 1, TS: 1}
		test.InputTakenOnceRunning(ctx, t, s.Run, func(timeout time.Duration) error {
			in.Timeout = timeout
			return in.InputReceipt(ctx, receipt)
		})
		res, err := client.QueryOutputRecords(ctx, &api.QueryOutputRecordsRequest{})
		if err != nil || len(res.Records) != 1 || res.LastSeq != 1 {
			t.Fatalf("the outbox once the retry was acknowledged: %+v %v", res, err)
		}
	})
}

// TestReceiptReplayOverHTTP: over internal HTTP (the polylith's path) the receiptserver
// serves its OutputReceiptEvent records by number, each with its seq, as readers fetch
// them after a wiped log; once they are older than receipt_server.output_replay_window
// asking for them is 404 M_NOT_FOUND, which a reader's OutputSequence turns into
// eventlog.ReplayGoneError naming the number after the last record. The records are stored
// by a receiptserver with the default window, then served by one with a window of 1 ns.
func TestReceiptReplayOverHTTP(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		log := test.EmbeddedLog(t, 1)
		start := func(window time.Duration) (*inthttp.Client, func()) {
			s, err := receiptserver.New(ctx, receiptserver.Deps{Cfg: &config.ReceiptServer{OutputReplayWindow: config.Duration(window)},
				DB: db, Log: log, InputTopic: "in", OutputTopic: "out", Logger: logrus.NewEntry(logrus.New())})
			if err != nil {
				t.Fatal(err)
			}
			router := mux.NewRouter()
			inthttp.Register(router, s.API(), ihttp.ServerOptions{Logger: logrus.NewEntry(logrus.New())})
			srv := httptest.NewServer(router)
			run, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- s.Run(run) }()
			return inthttp.NewClient(srv.URL, ihttp.ClientOptions{}), func() {
				stop()
				srv.Close()
				if err := <-done; err != nil {
					t.Error(err)
				}
			}
		}
		first, stop := start(time.Duration(config.Defaults().ReceiptServer.OutputReplayWindow))
		in := &api.Producer{Log: log, Topic: "in"}
		for i, eventID := range []string{"$1", "$2"} {
			if err := in.InputReceipt(ctx, &api.InputReceiptEvent{RoomID: "!r:x", UserID: "@a:x", Type: api.ReceiptRead,
				EventID: eventID, Depth: int64(i + 1), TS: 1}); err != nil {
				t.Fatal(err)
			}
		}
		var res *api.QueryOutputRecordsResponse
		var err error
		for ctx.Err() == nil {
			if res, err = first.QueryOutputRecords(ctx, &api.QueryOutputRecordsRequest{}); err == nil && len(res.Records) == 2 && res.LastSeq == 2 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		var got []string
		for i, raw := range res.Records {
			var o api.OutputReceiptEvent
			if err = json.Unmarshal(raw, &o); err != nil || o.Seq != int64(i+1) {
				t.Fatalf("record %d: %s, %v", i, raw, err)
			}
			got = append(got, o.EventID)
		}
		if !slices.Equal(got, []string{"$1", "$2"}) || res.LastSeq != 2 {
			t.Fatalf("records %v, last %d", got, res.LastSeq)
		}
		stop()
		pruned, stop := start(time.Nanosecond)
		defer stop()
		for ctx.Err() == nil {
			if _, err = pruned.QueryOutputRecords(ctx, &api.QueryOutputRecordsRequest{AfterSeq: 1}); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if !eventlog.HTTPNotFound(err) {
			t.Fatalf("past a window of 1 ns: %v", err)
		}
		_, err = api.OutputSequence(pruned).Fetch(ctx, 0, 1)
		var gone *eventlog.ReplayGoneError
		if !errors.As(err, &gone) || gone.Oldest != 3 {
			t.Fatalf("Fetch past the window: %v", err)
		}
	})
}
