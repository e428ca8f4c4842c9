package syncapi_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	fapi "github.com/matrix-org/dendrite/federationapi/api"
	"github.com/matrix-org/dendrite/internal/clientevent"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/httputil"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	receiptapi "github.com/matrix-org/dendrite/receiptserver/api"
	"github.com/matrix-org/dendrite/roomserver"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
	"github.com/matrix-org/dendrite/syncapi"
	"github.com/matrix-org/dendrite/syncapi/consumer"
	syncinthttp "github.com/matrix-org/dendrite/syncapi/inthttp"
	"github.com/matrix-org/dendrite/syncapi/types"
	uapi "github.com/matrix-org/dendrite/userapi/api"
)

const (
	serverName   = "test.local"
	outTopic     = "out"
	clientTopic  = "clientdata"
	keyTopic     = "keychanges"
	countsTopic  = "counts"
	typingTopic  = "typing"
	receiptTopic = "receipts"
)

var roomCounter atomic.Int64

// harness is a real roomserver and sync API on one database and the embedded log, with the
// sync API's routes served over loopback HTTP.
type harness struct {
	t       testing.TB
	db      *sqlutil.DB
	log     eventlog.Log
	input   *rsapi.Input
	key     ed25519.PrivateKey
	srv     *httptest.Server
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	mu      sync.Mutex
	devices map[string]*uapi.Device
	filters map[string][]byte
	// peeks is the sync API's internal API, called over internal HTTP as the clientapi
	// of the polylith does.
	peeks *syncinthttp.Client
}

func start(t testing.TB, db *sqlutil.DB) *harness {
	t.Helper()
	return startWithBackfill(t, db, nil, 0)
}

// startWithBackfill starts a harness whose /messages asks bf for older history, limit
// events at a time.
func startWithBackfill(t testing.TB, db *sqlutil.DB, bf fapi.SyncFederationAPI, limit int) *harness {
	t.Helper()
	return startWith(t, db, func(d *syncapi.Deps) { d.Backfill, d.BackfillLimit = bf, limit })
}

// startWith starts a harness whose sync API's Deps are changed by opt first.
func startWith(t testing.TB, db *sqlutil.DB, opt func(*syncapi.Deps)) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	_, key, _ := ed25519.GenerateKey(rand.Reader) // crypto/rand never fails on Linux
	rs, err := roomserver.New(ctx, roomserver.Deps{
		Cfg: &config.RoomServer{Shards: 1}, ServerName: serverName, KeyID: "ed25519:test", PrivateKey: key,
		DB: db, Log: log, InputTopic: "in", OutputTopic: outTopic, Logger: logrus.NewEntry(logger),
	})
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, db: db, log: log, key: key, cancel: cancel, devices: map[string]*uapi.Device{}, filters: map[string][]byte{},
		input: &rsapi.Input{Log: log, Topic: "in", Wait: rs.API()}}
	deps := syncapi.Deps{
		Cfg: &config.SyncAPI{}, ServerName: serverName, DB: db, Log: log, OutputRoomEventTopic: outTopic, ClientDataTopic: clientTopic, KeyChangeTopic: keyTopic,
		EphemeralTopics: consumer.EphemeralTopics{NotificationCounts: countsTopic, Typing: typingTopic, Receipts: receiptTopic},
		RoomserverAPI:   rs.API(), DeviceLookup: h.lookupDevice, FilterLookup: h.lookupFilter, Logger: logrus.NewEntry(logger),
	}
	opt(&deps)
	sa, err := syncapi.New(ctx, deps)
	if err != nil {
		t.Fatal(err)
	}
	router := mux.NewRouter().UseEncodedPath()
	(&httputil.Server{Component: "syncapi", Logger: logrus.NewEntry(logger)}).Register(router, sa.Routes())
	syncinthttp.Register(router, sa.API(), ihttp.ServerOptions{Logger: logrus.NewEntry(logger)})
	h.srv = httptest.NewServer(router)
	h.peeks = syncinthttp.NewClient(h.srv.URL, ihttp.ClientOptions{})
	h.wg.Add(2)
	go func() { defer h.wg.Done(); _ = rs.Run(ctx) }() // errors surface as failed requests
	go func() { defer h.wg.Done(); _ = sa.Run(ctx) }()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) stop() {
	h.srv.Close()
	h.cancel()
	h.wg.Wait()
	_ = h.log.Close() // nothing to do about a failed close in cleanup
}

func (h *harness) lookupDevice(_ context.Context, token string) (*uapi.Device, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if d, ok := h.devices[token]; ok {
		return d, nil
	}
	return nil, matrixerr.UnknownToken("unknown token")
}

func (h *harness) lookupFilter(_ context.Context, localpart, id string) ([]byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if f, ok := h.filters[localpart+"/"+id]; ok {
		return f, nil
	}
	return nil, matrixerr.NotFound("no such filter")
}

// user registers a device for name and returns its user ID, which is also its token.
func (h *harness) user(name string) string {
	id := "@" + name + ":" + serverName
	h.mu.Lock()
	h.devices[id] = &uapi.Device{UserID: id, DeviceID: "DEV" + name}
	h.mu.Unlock()
	return id
}

func (h *harness) submit(roomID string, evs ...rsapi.InputRoomEvent) []string {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := h.input.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{RoomID: roomID, Events: evs}})
	if err != nil {
		h.t.Fatalf("input: %v", err)
	}
	ids := make([]string, len(res.Results))
	for i, r := range res.Results {
		if r.Err != nil {
			h.t.Fatalf("event %d rejected: %v", i, r.Err)
		}
		ids[i] = r.EventID
	}
	return ids
}

// send submits a message from sender with a transaction ID and returns its event ID.
func (h *harness) send(roomID, sender, body string) string {
	h.t.Helper()
	ev := roomtest.Proto(sender, "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": body})
	ev.TxnID = &rsapi.TransactionID{UserID: sender, DeviceID: "DEV" + sender[1:len(sender)-len(serverName)-1], TransactionID: "txn-" + body}
	return h.submit(roomID, ev)[0]
}

func (h *harness) member(roomID, sender, target, membership string) string {
	h.t.Helper()
	return h.submit(roomID, roomtest.Proto(sender, spec.MRoomMember, roomtest.StateKey(target), map[string]string{"membership": membership}))[0]
}

// newRoom creates a v10 room owned by creator with a public join rule and extra state.
func (h *harness) newRoom(creator string, extra ...rsapi.InputRoomEvent) string {
	h.t.Helper()
	roomID := fmt.Sprintf("!r%d-%d:%s", time.Now().UnixNano(), roomCounter.Add(1), serverName)
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10)
	pe := gomatrixserverlib.ProtoEvent{SenderID: creator, RoomID: roomID, Type: spec.MRoomCreate, StateKey: roomtest.StateKey(""), Depth: 1, Version: verImpl}
	if err := pe.SetContent(map[string]any{"room_version": "10", "creator": creator}); err != nil {
		h.t.Fatal(err)
	}
	create, err := verImpl.NewEventBuilderFromProtoEvent(&pe).Build(time.Now(), serverName, "ed25519:test", h.key)
	if err != nil {
		h.t.Fatal(err)
	}
	evs := []rsapi.InputRoomEvent{
		{Kind: rsapi.KindNew, Event: &rsapi.Event{PDU: create}},
		roomtest.Proto(creator, spec.MRoomMember, roomtest.StateKey(creator), map[string]string{"membership": "join"}),
		roomtest.Proto(creator, spec.MRoomPowerLevels, roomtest.StateKey(""), map[string]any{"users": map[string]int{creator: 100}}),
		roomtest.Proto(creator, spec.MRoomJoinRules, roomtest.StateKey(""), map[string]string{"join_rule": "public"}),
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := h.input.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{
		RoomID: roomID, RoomVersion: "10", Atomic: true, Events: append(evs, extra...)}})
	if err != nil {
		h.t.Fatal(err)
	}
	for i, r := range res.Results {
		if r.Err != nil {
			h.t.Fatalf("create event %d rejected: %v", i, r.Err)
		}
	}
	return roomID
}

// accountData produces an account data change the way the userapi does.
func (h *harness) accountData(userID, roomID, evType string, content any) {
	h.t.Helper()
	raw, _ := json.Marshal(content) // test content always encodes
	b, _ := json.Marshal(uapi.OutputClientData{Type: uapi.OutputClientDataTypeAccountData,
		AccountData: &uapi.AccountDataChange{UserID: userID, RoomID: roomID, Type: evType, Content: raw}})
	if _, err := h.log.Produce(context.Background(), clientTopic, eventlog.Message{Key: []byte(userID), Value: b}); err != nil {
		h.t.Fatal(err)
	}
}

// receipt produces userID's m.read receipt on eventID the way the receiptserver does.
func (h *harness) receipt(roomID, userID, eventID string) {
	h.t.Helper()
	b, _ := json.Marshal(receiptapi.OutputReceiptEvent{RoomID: roomID, UserID: userID, Type: "m.read", EventID: eventID, TS: time.Now().UnixMilli()}) // plain data
	if _, err := h.log.Produce(context.Background(), receiptTopic, eventlog.Message{Key: []byte(roomID), Value: b}); err != nil {
		h.t.Fatal(err)
	}
}

// get performs an authenticated GET and decodes a 200 answer into out, returning the status.
func (h *harness) get(token, path string, q url.Values, out any) int {
	h.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, h.srv.URL+path+"?"+q.Encode(), nil) // the URL is well-formed
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK && out != nil {
		if err := json.Unmarshal(body, out); err != nil {
			h.t.Fatalf("decode %s: %v: %s", path, err, body)
		}
	}
	if resp.StatusCode != http.StatusOK && out != nil {
		h.t.Logf("%s: %d %s", path, resp.StatusCode, body)
	}
	return resp.StatusCode
}

// sync runs /sync and fails the test unless it answers 200.
func (h *harness) sync(token string, params ...string) *types.SyncResponse {
	h.t.Helper()
	q := url.Values{}
	for i := 0; i+1 < len(params); i += 2 {
		q.Set(params[i], params[i+1])
	}
	var res types.SyncResponse
	if code := h.get(token, "/_matrix/client/v3/sync", q, &res); code != http.StatusOK {
		h.t.Fatalf("sync: status %d", code)
	}
	return &res
}

// syncUntil long-polls from since until cond holds, with a deadline.
func (h *harness) syncUntil(token, since string, cond func(*types.SyncResponse) bool, params ...string) *types.SyncResponse {
	h.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		res := h.sync(token, append([]string{"since", since, "timeout", "2000"}, params...)...)
		if cond(res) {
			return res
		}
		since = res.NextBatch
	}
	h.t.Fatal("sync condition not met in time")
	return nil
}

// waitConsumed waits until the sync API has applied everything in the output topics.
func (h *harness) waitConsumed() {
	h.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		var want, got int64
		for _, topic := range []string{outTopic, clientTopic, keyTopic, countsTopic, typingTopic, receiptTopic} {
			ends, err := h.log.EndOffsets(ctx, topic)
			if err != nil {
				h.t.Fatal(err)
			}
			for _, end := range ends {
				want += end
			}
		}
		if err := h.db.QueryRowContext(ctx, "SELECT COALESCE(SUM(next_offset), 0) FROM syncapi_log_offsets").Scan(&got); err != nil {
			h.t.Fatal(err)
		}
		if got == want {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	h.t.Fatal("sync API did not catch up")
}

func eventIDs(evs []clientevent.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.EventID
	}
	return out
}
