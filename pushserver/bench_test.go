package pushserver_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/outbound"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/roomtest"
	"github.com/matrix-org/dendrite/pushserver"
	"github.com/matrix-org/dendrite/pushserver/api"
	"github.com/matrix-org/dendrite/pushserver/storage"
	pushsql "github.com/matrix-org/dendrite/pushserver/storage/sql"
	"github.com/matrix-org/dendrite/roomserver"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// benchMembers is the room size of BenchmarkPushReader.
const benchMembers = 1000

// benchProfile, when set, is a file for the CPU profile of BenchmarkPushReader's timed
// part only (-test.cpuprofile also covers making the room, whose thousand joins the
// reader evaluates too, and which outweighs the messages).
var benchProfile = flag.String("push-cpuprofile", "", "write the CPU profile of BenchmarkPushReader's timed part to this file")

// BenchmarkPushReader measures the push server in a room of 1,000 local members, each
// with the default rules and an HTTP pusher to a push gateway on loopback: b.N messages
// are sent one after the other through a real roomserver, the push reader evaluates each
// for 999 members (the sender excepted) and queues a push for each, and the deliverer
// posts them to the gateway. It reports the messages per second from the first send to
// the last push received (events/s) and to the last notification recorded
// (evaluated-events/s: the sends end before the reader catches up, so this is the rate
// the reader keeps up with when the sender is faster), the pushes per second, and the
// p50 and p99 of the time from a message's send to each of its pushes reaching the
// gateway. pushes/s-evaluating and pushes/s-after split the pushes per second at the
// last notification recorded.
func BenchmarkPushReader(b *testing.B) {
	b.Run("sqlite", func(b *testing.B) {
		benchPushReader(b, func() string { return "file:" + filepath.Join(b.TempDir(), "push.db") })
	})
	b.Run("postgres", func(b *testing.B) {
		benchPushReader(b, func() string { return test.PostgresDSN(b) })
	})
}

// benchGateway is a push gateway that records, per push, the time from its message's
// send (looked up by the message's body) to its arrival.
type benchGateway struct {
	mu        sync.Mutex
	sent      map[string]time.Time
	latencies []time.Duration
}

// count is how many pushes arrived.
func (g *benchGateway) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.latencies)
}

func (g *benchGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Notification struct {
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		} `json:"notification"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	now := time.Now()
	g.mu.Lock()
	if sent, ok := g.sent[body.Notification.Content.Body]; ok {
		g.latencies = append(g.latencies, now.Sub(sent))
	}
	g.mu.Unlock()
	_, _ = io.WriteString(w, `{"rejected":[]}`) // the deliverer's problem if the write fails
}

func benchPushReader(b *testing.B, dsn func() string) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := sqlutil.Open(dsn())
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close() // nolint: errcheck // benchmark teardown
	logDB, err := sqlutil.Open("file:" + filepath.Join(b.TempDir(), "log.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer logDB.Close() // nolint: errcheck // benchmark teardown
	log, err := eventlog.NewEmbedded(ctx, logDB, eventlog.Config{DefaultPartitions: 4})
	if err != nil {
		b.Fatal(err)
	}
	defer log.Close() // nolint: errcheck // benchmark teardown
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	const server = "bench.test"
	_, key, _ := ed25519.GenerateKey(rand.Reader) // crypto/rand never fails on Linux
	rs, err := roomserver.New(ctx, roomserver.Deps{Cfg: &config.RoomServer{Shards: 1}, ServerName: server, KeyID: "ed25519:bench",
		PrivateKey: key, DB: db, Log: log, InputTopic: "in", OutputTopic: "out", Logger: logrus.NewEntry(logger)})
	if err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(1)
	go func() { defer wg.Done(); _ = rs.Run(ctx) }() // a stopped roomserver fails the inputs below
	input := &rsapi.Input{Log: log, Topic: "in", Wait: rs.API()}
	users := make([]string, benchMembers)
	for i := range users {
		users[i] = fmt.Sprintf("@u%d:%s", i, server)
	}
	roomID := benchRoom(b, input, key, server, users)

	gw := &benchGateway{sent: map[string]time.Time{}}
	gwSrv := httptest.NewServer(gw)
	defer gwSrv.Close()
	store, err := pushsql.Open(ctx, db)
	if err != nil {
		b.Fatal(err)
	}
	data := json.RawMessage(`{"url":"` + gwSrv.URL + api.NotifyPath + `"}`)
	for _, u := range users {
		p := &storage.StoredPusher{UserID: u, DeviceID: "D", CreatedTS: time.Now().UnixMilli(),
			Pusher: api.Pusher{PushKey: "key-" + u, Kind: api.PusherKindHTTP, AppID: "bench", Lang: "en", Data: data}}
		if err := store.UpsertPusher(ctx, p, true); err != nil {
			b.Fatal(err)
		}
	}
	deny, err := outbound.NewPolicy([]string{})
	if err != nil {
		b.Fatal(err)
	}
	topics := pushserver.Topics{RoomEvents: "out", ClientData: "clientdata", Receipts: "receipts", KeyChanges: "keys", Notifications: "counts"}
	s, err := pushserver.New(ctx, pushserver.Deps{Cfg: &config.PushServer{}, ServerName: server, DB: db, Log: log, Topics: topics,
		Rooms: rs.API(), Deny: deny, Logger: logrus.NewEntry(logger)})
	if err != nil {
		b.Fatal(err)
	}
	wg.Add(1)
	go func() { defer wg.Done(); _ = s.Run(ctx) }() // its end is the benchmark's
	waitJoined(b, db, roomID, benchMembers)

	stopProfile := startBenchProfile(b)
	b.ResetTimer()
	start := time.Now()
	want := b.N * (benchMembers - 1)
	for i := range b.N {
		body := "message " + strconv.Itoa(i)
		gw.mu.Lock()
		gw.sent[body] = time.Now()
		gw.mu.Unlock()
		ev := roomtest.Proto(users[0], "m.room.message", nil, map[string]string{"msgtype": "m.text", "body": body})
		benchSubmit(b, input, roomID, ev)
	}
	deadline := time.Now().Add(10 * time.Minute)
	var evaluated time.Duration
	var pushedEvaluating int // pushes arrived when the last notification was recorded
	for n := gw.count(); n < want; n = gw.count() {
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d pushes arrived", n, want)
		}
		if evaluated == 0 {
			var recorded int
			if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM pushserver_notifications n
				JOIN pushserver_nids r ON r.nid = n.room_nid WHERE r.id = $1`, roomID).Scan(&recorded); err != nil {
				b.Fatal(err)
			}
			if recorded == want {
				evaluated, pushedEvaluating = time.Since(start), gw.count()
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	elapsed := time.Since(start)
	if evaluated == 0 {
		evaluated, pushedEvaluating = elapsed, want
	}
	b.StopTimer()
	stopProfile()
	gw.mu.Lock()
	lat := slices.Clone(gw.latencies)
	gw.mu.Unlock()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(b.N)/evaluated.Seconds(), "evaluated-events/s")
	b.ReportMetric(float64(want)/elapsed.Seconds(), "pushes/s")
	// Delivery while the reader was still recording notifications, and after.
	b.ReportMetric(float64(pushedEvaluating)/evaluated.Seconds(), "pushes/s-evaluating")
	if rest := elapsed - evaluated; rest > 0 {
		b.ReportMetric(float64(want-pushedEvaluating)/rest.Seconds(), "pushes/s-after")
	}
	b.ReportMetric(float64(lat[len(lat)/2].Milliseconds()), "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Milliseconds()), "p99-ms")
}

// startBenchProfile starts the CPU profile -push-cpuprofile asks for and returns what
// stops it.
func startBenchProfile(b *testing.B) func() {
	if *benchProfile == "" {
		return func() {}
	}
	f, err := os.Create(*benchProfile)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Error(err)
		}
	}
}

// benchRoom creates a public room of users (users[0] its creator, with power level 100)
// through the roomserver, joining the others a hundred per input.
func benchRoom(b testing.TB, input *rsapi.Input, key ed25519.PrivateKey, server spec.ServerName, users []string) string {
	roomID := fmt.Sprintf("!bench%d:%s", time.Now().UnixNano(), server)
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10)
	pe := gomatrixserverlib.ProtoEvent{SenderID: users[0], RoomID: roomID, Type: spec.MRoomCreate, StateKey: roomtest.StateKey(""), Depth: 1, Version: verImpl}
	if err := pe.SetContent(map[string]any{"room_version": "10", "creator": users[0]}); err != nil {
		b.Fatal(err)
	}
	create, err := verImpl.NewEventBuilderFromProtoEvent(&pe).Build(time.Now(), server, "ed25519:bench", key)
	if err != nil {
		b.Fatal(err)
	}
	benchSubmit(b, input, roomID,
		rsapi.InputRoomEvent{Kind: rsapi.KindNew, Event: &rsapi.Event{PDU: create}},
		roomtest.Proto(users[0], spec.MRoomMember, roomtest.StateKey(users[0]), map[string]string{"membership": "join"}),
		roomtest.Proto(users[0], spec.MRoomPowerLevels, roomtest.StateKey(""), map[string]any{"users": map[string]int{users[0]: 100}}),
		roomtest.Proto(users[0], spec.MRoomJoinRules, roomtest.StateKey(""), map[string]string{"join_rule": "public"}))
	for rest := users[1:]; len(rest) > 0; {
		chunk := rest[:min(len(rest), 100)]
		rest = rest[len(chunk):]
		evs := make([]rsapi.InputRoomEvent, len(chunk))
		for i, u := range chunk {
			evs[i] = roomtest.Proto(u, spec.MRoomMember, roomtest.StateKey(u),
				map[string]string{"membership": "join", "displayname": "User " + strings.TrimPrefix(u, "@u")})
		}
		benchSubmit(b, input, roomID, evs...)
	}
	return roomID
}

func benchSubmit(b testing.TB, input *rsapi.Input, roomID string, evs ...rsapi.InputRoomEvent) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := input.InputRoomEvents(ctx, &rsapi.InputRoomEventsRequest{Input: rsapi.InputRoomEvents{RoomID: roomID, RoomVersion: "10", Events: evs}})
	if err != nil {
		b.Fatal(err)
	}
	for i, r := range res.Results {
		if r.Err != nil {
			b.Fatalf("event %d rejected: %v", i, r.Err)
		}
	}
}

// waitJoined waits until the push reader knows n joined members of the room.
func waitJoined(b testing.TB, db *sqlutil.DB, roomID string, n int) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var got int
		if err := db.QueryRow("SELECT COUNT(*) FROM pushserver_members WHERE room_id = $1 AND membership = 'join'", roomID).Scan(&got); err != nil {
			b.Fatal(err)
		}
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("the push reader knows %d of %d members", got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
