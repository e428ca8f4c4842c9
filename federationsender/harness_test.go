package federationsender_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/federationapi"
	fapi "github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/federationsender"
	fsapi "github.com/matrix-org/dendrite/federationsender/api"
	fsinthttp "github.com/matrix-org/dendrite/federationsender/inthttp"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/fedclient"
	"github.com/matrix-org/dendrite/internal/httputil"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

const testRoomVersion = gomatrixserverlib.RoomVersionV10

// eventually bounds the tests' waits for what the sender does. It is generous: on a
// loaded machine (CI's two cores also run other packages' tests) each PostgreSQL round
// trip can take tens of milliseconds, and C's first 70 PDUs took up to 13 s there.
const eventually = 60 * time.Second

func quietLogger() *logrus.Entry {
	l := logrus.New()
	l.SetLevel(logrus.ErrorLevel)
	return logrus.NewEntry(l)
}

// server is a homeserver on a TLS listener on 127.0.0.1 (its name "127.0.0.1:<port>"), with
// its own signing key and a real federationapi (key server, key ring with its cache) on its
// own SQLite database. As a receiver it serves PUT /send: every request's X-Matrix signature
// is checked with its key ring (which fetches the sender's key from the sender), and
// transactions are deduplicated by (origin, transaction ID) as the spec asks.
type server struct {
	t      testing.TB
	name   spec.ServerName
	keyID  gomatrixserverlib.KeyID
	key    ed25519.PrivateKey
	srv    *httptest.Server
	client *fedclient.Client
	fed    *federationapi.FederationAPI
	ring   gomatrixserverlib.JSONVerifier

	// down makes the server drop every /send connection.
	down atomic.Bool

	mu sync.Mutex
	// tryList are the sender's tries to send to the server, told apart by their
	// origin_server_ts: the sender stamps a transaction each time it tries it, and the
	// client's connection attempts within one try (each resolved address, resolved once
	// more) send the same body.
	tryList  []try
	txns     map[string]bool
	pdus     []string // event IDs in arrival order (only from transactions not seen before)
	edus     []gomatrixserverlib.EDU
	txnSizes []int
	badAuth  int
}

func newServer(t testing.TB) *server {
	t.Helper()
	s := &server{t: t, txns: map[string]bool{}, keyID: "ed25519:k" + gomatrixserverlib.KeyID(fmt.Sprint(time.Now().UnixNano()%100000))}
	_, s.key, _ = ed25519.GenerateKey(nil)
	router := mux.NewRouter().UseEncodedPath()
	s.srv = httptest.NewUnstartedServer(router)
	s.name = spec.ServerName(s.srv.Listener.Addr().String())
	s.client = fedclient.New(fedclient.Options{ServerName: s.name, KeyID: s.keyID, PrivateKey: s.key, SkipVerify: true, Timeout: 5 * time.Second})
	db, err := sqlutil.Open("file:" + filepath.Join(t.TempDir(), "fed.db"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Defaults().FederationAPI
	s.fed, err = federationapi.New(context.Background(), federationapi.Deps{Cfg: &cfg, ServerName: s.name, KeyID: s.keyID, PrivateKey: s.key,
		DB: db, Client: s.client, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	s.ring = fapi.KeyRing(s.fed.API())
	router.HandleFunc("/_matrix/federation/v1/send/{txnID}", s.serveSend).Methods(http.MethodPut)
	(&httputil.Server{Component: "federationapi", Logger: quietLogger(), MaxBodyBytes: cfg.MaxBodyBytes}).Register(router, s.fed.Routes())
	s.srv.StartTLS()
	t.Cleanup(func() {
		s.srv.Close()
		s.client.CloseIdleConnections()
		_ = db.Close() // nothing to do about a failed close in cleanup
	})
	return s
}

func (s *server) serveSend(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return // the sender went away; nothing to record
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var stamp struct {
		OriginServerTS spec.Timestamp `json:"origin_server_ts"`
	}
	if err := json.Unmarshal(body, &stamp); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	if n := len(s.tryList); n > 0 && s.tryList[n-1].start.Equal(stamp.OriginServerTS.Time()) {
		s.tryList[n-1].lastAttempt = time.Now()
	} else {
		s.tryList = append(s.tryList, try{start: stamp.OriginServerTS.Time(), lastAttempt: time.Now()})
	}
	s.mu.Unlock()
	if s.down.Load() {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			_ = conn.Close() // the point is to fail the request
		}
		return
	}
	req, errRes := fclient.VerifyHTTPRequest(r, time.Now(), s.name, nil, s.ring)
	if req == nil {
		s.mu.Lock()
		s.badAuth++
		s.mu.Unlock()
		w.WriteHeader(errRes.Code)
		_ = json.NewEncoder(w).Encode(errRes.JSON) // test server
		return
	}
	var txn gomatrixserverlib.Transaction
	if err := json.Unmarshal(req.Content(), &txn); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	key := string(req.Origin()) + "/" + mux.Vars(r)["txnID"]
	res := fclient.RespSend{PDUs: map[string]fclient.PDUResult{}}
	if !s.txns[key] {
		s.txns[key] = true
		s.txnSizes = append(s.txnSizes, len(txn.PDUs))
		for _, raw := range txn.PDUs {
			ev, err := gomatrixserverlib.MustGetRoomVersion(testRoomVersion).NewEventFromUntrustedJSON(raw)
			if err != nil {
				s.t.Errorf("undecodable PDU: %v", err)
				continue
			}
			s.pdus = append(s.pdus, ev.EventID())
			res.PDUs[ev.EventID()] = fclient.PDUResult{}
		}
		s.edus = append(s.edus, txn.EDUs...)
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(res) // test server
}

// try is one try of the sender to send a transaction to a server.
type try struct {
	// start is when the sender started it (its origin_server_ts, in milliseconds).
	start time.Time
	// lastAttempt is when the last of its connection attempts reached the server: the
	// sender saw the try fail after it.
	lastAttempt time.Time
}

// tries are the sender's tries to reach the server, one per try however many connection
// attempts it made.
func (s *server) tries() []try {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.tryList)
}

func (s *server) received() (pdus []string, edus []gomatrixserverlib.EDU) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.pdus...), append([]gomatrixserverlib.EDU(nil), s.edus...)
}

// waitPDUs waits until the server got n PDUs and returns them.
func (s *server) waitPDUs(n int, timeout time.Duration) []string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pdus, _ := s.received()
		if len(pdus) >= n {
			return pdus
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s got %d PDUs within %s, want %d", s.name, len(pdus), timeout, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitPDU waits until the server got the event eventID.
func (s *server) waitPDU(eventID string, timeout time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if pdus, _ := s.received(); slices.Contains(pdus, eventID) {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s did not get %s within %s", s.name, eventID, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitEDUs waits until the server got EDUs for which done is true.
func (s *server) waitEDUs(timeout time.Duration, done func([]gomatrixserverlib.EDU) bool) []gomatrixserverlib.EDU {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		_, edus := s.received()
		if done(edus) {
			return edus
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%s: EDUs within %s not as expected: %s", s.name, timeout, eduSummary(edus))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func eduSummary(edus []gomatrixserverlib.EDU) string {
	var parts []string
	for _, e := range edus {
		parts = append(parts, e.Type+" "+string(e.Content))
	}
	return strings.Join(parts, "\n")
}

// rooms is the roomserver as the sender sees it: each room's current state.
type rooms struct {
	mu    sync.Mutex
	state map[string][]gomatrixserverlib.PDU
}

func (r *rooms) set(roomID string, evs ...gomatrixserverlib.PDU) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.state == nil {
		r.state = map[string][]gomatrixserverlib.PDU{}
	}
	r.state[roomID] = evs
}

// QueryOutputRecords: the harness produces its OutputRoomEvent records itself and never
// wipes the log, so there is never anything to replay.
func (r *rooms) QueryOutputRecords(context.Context, *rsapi.QueryOutputRecordsRequest) (*rsapi.QueryOutputRecordsResponse, error) {
	return &rsapi.QueryOutputRecordsResponse{}, nil
}

func (r *rooms) QueryRoomInfo(context.Context, *rsapi.QueryRoomInfoRequest) (*rsapi.QueryRoomInfoResponse, error) {
	return nil, errors.New("not used")
}

func (r *rooms) QueryCurrentState(_ context.Context, req *rsapi.QueryCurrentStateRequest) (*rsapi.QueryCurrentStateResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	evs, ok := r.state[req.RoomID]
	return &rsapi.QueryCurrentStateResponse{RoomExists: ok, RoomVersion: string(testRoomVersion), StateEvents: rsapi.Events(evs)}, nil
}

func (r *rooms) QueryMembershipForUser(context.Context, *rsapi.QueryMembershipForUserRequest) (*rsapi.QueryMembershipForUserResponse, error) {
	return nil, errors.New("not used")
}

func (r *rooms) QueryRoomsForUser(_ context.Context, req *rsapi.QueryRoomsForUserRequest) (*rsapi.QueryRoomsForUserResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res := &rsapi.QueryRoomsForUserResponse{}
	for roomID, evs := range r.state {
		for _, ev := range evs {
			if m, err := ev.Membership(); err == nil && ev.StateKeyEquals(req.UserID) && m == req.Membership {
				res.RoomIDs = append(res.RoomIDs, roomID)
			}
		}
	}
	return res, nil
}

func (r *rooms) QueryEventsByID(context.Context, *rsapi.QueryEventsByIDRequest) (*rsapi.QueryEventsByIDResponse, error) {
	return &rsapi.QueryEventsByIDResponse{}, nil
}

func (r *rooms) QueryStateAtEvent(context.Context, *rsapi.QueryStateAtEventRequest) (*rsapi.QueryStateAtEventResponse, error) {
	return nil, errors.New("not used")
}

func (r *rooms) QueryServerAllowed(context.Context, *rsapi.QueryServerAllowedRequest) (*rsapi.QueryServerAllowedResponse, error) {
	return nil, errors.New("not used")
}

// event is a signed event of sender's server.
func (s *server) event(t testing.TB, roomID, sender, evType string, stateKey *string, content any) gomatrixserverlib.PDU {
	t.Helper()
	verImpl := gomatrixserverlib.MustGetRoomVersion(testRoomVersion)
	pe := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: roomID, Type: evType, StateKey: stateKey, Depth: 2,
		PrevEvents: []string{}, AuthEvents: []string{}, Version: verImpl}
	if err := pe.SetContent(content); err != nil {
		t.Fatal(err)
	}
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&pe).Build(time.Now(), s.name, s.keyID, s.key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func (s *server) member(t testing.TB, roomID, userID, membership string) gomatrixserverlib.PDU {
	return s.event(t, roomID, userID, spec.MRoomMember, &userID, map[string]string{"membership": membership})
}

func (s *server) user(local string) string {
	return "@" + local + ":" + string(s.name)
}

// sender is server A's federationsender on db, reading an embedded log.
type sender struct {
	t     testing.TB
	a     *server
	db    *sqlutil.DB
	log   eventlog.Log
	rooms *rooms
	cfg   config.FederationSender
	// presence, if set, answers the sender's presence queries.
	presence presenceapi.QueryAPI
	fs       *federationsender.FederationSender
	// reg holds the running sender's metrics.
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

func newSender(t testing.TB, a *server, db *sqlutil.DB, log eventlog.Log, rs *rooms, cfg config.FederationSender) *sender {
	return newSenderWithPresence(t, a, db, log, rs, cfg, nil)
}

// newSenderWithPresence is newSender whose presence queries presence answers.
func newSenderWithPresence(t testing.TB, a *server, db *sqlutil.DB, log eventlog.Log, rs *rooms, cfg config.FederationSender,
	presence presenceapi.QueryAPI) *sender {
	s := &sender{t: t, a: a, db: db, log: log, rooms: rs, cfg: cfg, presence: presence}
	s.start()
	t.Cleanup(s.stop)
	return s
}

func testSenderConfig() config.FederationSender {
	cfg := config.Defaults().FederationSender
	cfg.MinBackoff, cfg.MaxBackoff = config.Duration(50*time.Millisecond), config.Duration(time.Second)
	return cfg
}

func (s *sender) start() {
	s.t.Helper()
	s.reg = prometheus.NewRegistry()
	fs, err := federationsender.New(context.Background(), federationsender.Deps{Cfg: &s.cfg, ServerName: s.a.name, DB: s.db, Log: s.log,
		Topics: federationsender.TopicsWithPrefix(""), Rooms: s.rooms, Presence: s.presence, Client: s.a.client, RequestTimeout: 5 * time.Second,
		Logger: quietLogger(), Registerer: s.reg})
	if err != nil {
		s.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.fs, s.cancel, s.done = fs, cancel, make(chan error, 1)
	go func() { s.done <- fs.Run(ctx) }()
}

func (s *sender) stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	if err := <-s.done; err != nil {
		s.t.Errorf("federationsender run: %v", err)
	}
	s.cancel = nil
}

// failedTransactions is how many tries of a transaction the running sender counted as
// failed (dendrite_federationsender_transactions_total{outcome="failed"}). It counts each
// failure just before it sets the backoff or blacklist wait that follows.
func (s *sender) failedTransactions() float64 {
	s.t.Helper()
	mfs, err := s.reg.Gather()
	if err != nil {
		s.t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "dendrite_federationsender_transactions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == "failed" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// alive tells the sender that name is up, over the internal HTTP API (as the federationapi
// of a polylith would).
func (s *sender) alive(name spec.ServerName) {
	s.t.Helper()
	router := mux.NewRouter()
	srv := fsinthttp.Register(router, s.fs.API(), ihttp.ServerOptions{Logger: quietLogger()})
	if want, _ := ihttp.Methods(reflect.TypeFor[fsapi.SenderAPI]()); !slices.Equal(srv.Methods(), want) {
		s.t.Fatalf("inthttp serves %v, api.SenderAPI has %v", srv.Methods(), want)
	}
	hs := httptest.NewServer(router)
	defer hs.Close()
	client := fsinthttp.NewClient(hs.URL, ihttp.ClientOptions{})
	if _, err := client.PerformServerAlive(context.Background(), &fsapi.PerformServerAliveRequest{ServerName: string(name)}); err != nil {
		s.t.Fatal(err)
	}
}

// produceEvents writes events to OutputRoomEvent as the roomserver would; adds and removes
// are the state delta of a state event.
func produceEvents(t testing.TB, log eventlog.Log, evs ...gomatrixserverlib.PDU) {
	t.Helper()
	msgs := make([]eventlog.Message, 0, len(evs))
	for _, ev := range evs {
		out := &rsapi.OutputNewRoomEvent{Event: rsapi.Event{PDU: ev}}
		if ev.StateKey() != nil {
			out.AddsStateEventIDs = []string{ev.EventID()}
		}
		msgs = append(msgs, outputMessage(t, out))
	}
	if _, err := log.Produce(context.Background(), rsapi.TopicOutputRoomEvent, msgs...); err != nil {
		t.Fatal(err)
	}
}

func outputMessage(t testing.TB, out *rsapi.OutputNewRoomEvent) eventlog.Message {
	t.Helper()
	b, err := json.Marshal(rsapi.OutputRoomEvent{Type: rsapi.OutputTypeNewRoomEvent, NewRoomEvent: out})
	if err != nil {
		t.Fatal(err)
	}
	return eventlog.Message{Key: []byte(out.Event.RoomID().String()), Value: b}
}

func produceJSON(t testing.TB, log eventlog.Log, topic, key string, v any) {
	t.Helper()
	if err := eventlog.ProduceJSON(context.Background(), log, topic, key, v); err != nil {
		t.Fatal(err)
	}
}

func eventIDs(evs []gomatrixserverlib.PDU) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.EventID()
	}
	return out
}
