package inthttp_test

import (
	"context"
	"encoding/json"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/eduserver"
	"github.com/matrix-org/dendrite/eduserver/api"
	"github.com/matrix-org/dendrite/eduserver/inthttp"
	"github.com/matrix-org/dendrite/internal/config"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
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

// TestSendToDeviceWaitOverHTTP: a writer whose wait goes over internal HTTP (the polylith)
// acknowledges a send-to-device request only once the eduserver took it. While the
// eduserver does not run, the wait ends at its timeout with 504 M_UNKNOWN; once it runs,
// the client's retry with the same transaction ID is acknowledged, and the request's
// message is in the outbox exactly once (QueryOutputRecords over HTTP).
func TestSendToDeviceWaitOverHTTP(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		log := test.EmbeddedLog(t, 1)
		topics := eduserver.TopicsWithPrefix("H")
		s, err := eduserver.New(ctx, eduserver.Deps{Cfg: &config.EDUServer{MaxTypingTimeout: config.Duration(time.Minute)}, ServerName: "x",
			DB: db, Log: log, Topics: topics, Logger: logrus.NewEntry(logrus.New())})
		if err != nil {
			t.Fatal(err)
		}
		client := inthttp.NewClient(test.InternalServer(t, func(r *mux.Router, o ihttp.ServerOptions) { inthttp.Register(r, s.API(), o) }),
			ihttp.ClientOptions{})
		in := &api.Producer{Log: log, TypingTopic: topics.InputTyping, ToDeviceTopic: topics.InputSendToDevice, Wait: client}
		req := &api.InputSendToDeviceEvent{Sender: "@a:x", SenderDevice: "A", TxnID: "t1", Type: "m.test",
			Messages: map[string]map[string]json.RawMessage{"@c:remote": {"R": json.RawMessage(`{"n":1}`)}}}
		test.InputTakenOnceRunning(ctx, t, s.Run, func(timeout time.Duration) error {
			in.Timeout = timeout
			return in.InputSendToDevice(ctx, req)
		})
		res, err := client.QueryOutputRecords(ctx, &api.QueryOutputRecordsRequest{})
		if err != nil || len(res.Records) != 1 || res.LastSeq != 1 {
			t.Fatalf("the outbox after the retry: %+v %v", res, err)
		}
	})
}
