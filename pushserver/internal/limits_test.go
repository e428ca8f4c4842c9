package internal

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/pushserver/api"
	"github.com/matrix-org/dendrite/pushserver/storage"
	pushsql "github.com/matrix-org/dendrite/pushserver/storage/sql"
)

// testGateway is a push gateway on loopback that records the push keys it was sent,
// answers with reject (the push keys it rejects), and, while hold is open, keeps every
// request waiting, counting how many wait at once.
type testGateway struct {
	mu       sync.Mutex
	got      []string
	inFlight int
	maxIn    int
	reject   []string
	hold     chan struct{}
}

func (g *testGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body notifyRequest
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || len(body.Notification.Devices) != 1 {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	g.mu.Lock()
	g.inFlight++
	g.maxIn = max(g.maxIn, g.inFlight)
	hold := g.hold
	g.mu.Unlock()
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
		}
	}
	g.mu.Lock()
	g.inFlight--
	g.got = append(g.got, body.Notification.Devices[0].PushKey)
	rejected, err := json.Marshal(map[string][]string{"rejected": g.reject})
	g.mu.Unlock()
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	_, _ = w.Write(rejected) // the deliverer's problem if the write fails
}

// state is what the gateway received so far and the most requests it held at once.
func (g *testGateway) state() (got []string, inFlight, maxIn int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.got...), g.inFlight, g.maxIn
}

// startGateway serves g on loopback and returns its notify URL.
func startGateway(t *testing.T, g *testGateway) string {
	t.Helper()
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return srv.URL + api.NotifyPath
}

// addPushers registers an HTTP pusher to url for each user, push key "key-" + user.
func addPushers(t *testing.T, store storage.Database, url string, users ...string) {
	t.Helper()
	for _, u := range users {
		p := &storage.StoredPusher{UserID: u, DeviceID: "D", CreatedTS: time.Now().UnixMilli(), Pusher: api.Pusher{
			PushKey: "key-" + u, Kind: api.PusherKindHTTP, AppID: "test", Lang: "en", Data: json.RawMessage(`{"url":"` + url + `"}`)}}
		if err := store.UpsertPusher(context.Background(), p, true); err != nil {
			t.Fatal(err)
		}
	}
}

// queueBadges queues a badge update (a push without an event) for each user's pushers.
func queueBadges(t *testing.T, db *sqlutil.DB, store storage.Database, users ...string) {
	t.Helper()
	ctx := context.Background()
	if err := db.WithTx(ctx, func(tx *sql.Tx) error { return store.EnqueuePushes(ctx, tx, nil, users) }); err != nil {
		t.Fatal(err)
	}
}

// startDeliverer runs a deliverer with the limits until the test ends.
func startDeliverer(t *testing.T, store storage.Database, limits Limits) *Deliverer {
	t.Helper()
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	d := NewDeliverer(store, nil, &http.Client{Timeout: time.Minute}, limits, nil, logrus.NewEntry(logger))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return d
}

// waitFor polls cond until it holds, failing the test after a minute with what.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestSlowGatewayHoldsOnlyItsShare: with max_deliveries 4 and max_deliveries_per_gateway
// 2, six pushers to a gateway that holds every request keep at most two requests open
// there, and a pusher to another gateway, queued after them, is delivered meanwhile
// (without the per-gateway limit the six took all four slots and it waited for them).
// Once the slow gateway answers, every one of its pushes arrives.
func TestSlowGatewayHoldsOnlyItsShare(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		store, err := pushsql.Open(context.Background(), db)
		if err != nil {
			t.Fatal(err)
		}
		hold := make(chan struct{})
		slow := &testGateway{hold: hold}
		slowURL := startGateway(t, slow)
		t.Cleanup(func() {
			select {
			case <-hold:
			default:
				close(hold)
			}
		})
		fast := &testGateway{}
		fastURL := startGateway(t, fast)
		var slowUsers []string
		for i := range 6 {
			slowUsers = append(slowUsers, fmt.Sprintf("@slow%d:test", i))
		}
		addPushers(t, store, slowURL, slowUsers...)
		addPushers(t, store, fastURL, "@fast:test")
		queueBadges(t, db, store, slowUsers...)
		d := startDeliverer(t, store, Limits{Total: 4, PerGateway: 2})
		waitFor(t, "the slow gateway to hold two requests", func() bool { _, in, _ := slow.state(); return in == 2 })
		queueBadges(t, db, store, "@fast:test")
		d.Wake()
		waitFor(t, "the fast gateway's push", func() bool { got, _, _ := fast.state(); return len(got) == 1 })
		if got, _, maxIn := slow.state(); maxIn > 2 || len(got) != 0 {
			t.Fatalf("slow gateway: %d requests at once (limit 2), %d answered while held", maxIn, len(got))
		}
		close(hold)
		waitFor(t, "every slow push", func() bool { got, _, _ := slow.state(); return len(got) == len(slowUsers) })
		if _, _, maxIn := slow.state(); maxIn > 2 {
			t.Fatalf("slow gateway: %d requests at once, limit 2", maxIn)
		}
	})
}

// countingDB is the real storage, counting the unread-count reads the deliverer makes;
// while gate is open (not closed), removing delivered pushes waits.
type countingDB struct {
	storage.Database
	mu     sync.Mutex
	unread int
	gate   chan struct{}
}

func (c *countingDB) Delivered(ctx context.Context, seqs []int64) error {
	if c.gate != nil {
		select {
		case <-c.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return c.Database.Delivered(ctx, seqs)
}

func (c *countingDB) UnreadTotal(ctx context.Context, userID string) (int, error) {
	c.mu.Lock()
	c.unread++
	c.mu.Unlock()
	return c.Database.UnreadTotal(ctx, userID)
}

// TestQueueReadInBatches: five badge updates queued for one pusher before the deliverer
// starts arrive, read from the queue in one batch, with the user's unread
// count read once for them all (it was read once per push).
func TestQueueReadInBatches(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		store, err := pushsql.Open(context.Background(), db)
		if err != nil {
			t.Fatal(err)
		}
		gw := &testGateway{}
		addPushers(t, store, startGateway(t, gw), "@a:test")
		for range 5 {
			queueBadges(t, db, store, "@a:test")
		}
		counting := &countingDB{Database: store}
		startDeliverer(t, counting, Limits{Total: 4, PerGateway: 2})
		waitFor(t, "five pushes", func() bool { got, _, _ := gw.state(); return len(got) == 5 })
		var depth int
		waitFor(t, "an empty queue", func() bool {
			depth, err = store.QueueDepth(context.Background())
			return err == nil && depth == 0
		})
		counting.mu.Lock()
		defer counting.mu.Unlock()
		if counting.unread != 1 {
			t.Fatalf("unread count read %d times for one batch of five pushes", counting.unread)
		}
	})
}

// TestRejectedPushKeyRemovesPusher: a gateway that lists @a's push key in rejected gets
// one push for it of the three queued: the pusher and the rest of its queue are deleted,
// while @b's pusher at the same gateway gets its push and stays.
func TestRejectedPushKeyRemovesPusher(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		store, err := pushsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		gw := &testGateway{reject: []string{"key-@a:test"}}
		addPushers(t, store, startGateway(t, gw), "@a:test", "@b:test")
		for range 3 {
			queueBadges(t, db, store, "@a:test")
		}
		queueBadges(t, db, store, "@b:test")
		startDeliverer(t, store, Limits{Total: 4, PerGateway: 2})
		waitFor(t, "@a's pusher removed, @b's push and an empty queue", func() bool {
			pa, err1 := store.Pushers(ctx, "@a:test")
			depth, err2 := store.QueueDepth(ctx)
			got, _, _ := gw.state()
			return err1 == nil && err2 == nil && len(pa) == 0 && depth == 0 && slices.Contains(got, "key-@b:test")
		})
		got, _, _ := gw.state()
		if n := len(slices.DeleteFunc(got, func(k string) bool { return k != "key-@a:test" })); n != 1 {
			t.Fatalf("the rejected push key got %d pushes, want 1", n)
		}
		pb, err := store.Pushers(ctx, "@b:test")
		if err != nil || len(pb) != 1 {
			t.Fatalf("@b's pushers %v, %v", pb, err)
		}
	})
}

// TestSendsDoNotWaitForEachCommit: while removing delivered pushes from the queue is held
// up (a slow commit), all five badge updates queued for one pusher still reach the
// gateway; once the commit goes through, the queue is empty. (Each push used to wait for
// its removal's commit before the next was sent.)
func TestSendsDoNotWaitForEachCommit(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		store, err := pushsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		gw := &testGateway{}
		addPushers(t, store, startGateway(t, gw), "@a:test")
		for range 5 {
			queueBadges(t, db, store, "@a:test")
		}
		gated := &countingDB{Database: store, gate: make(chan struct{})}
		startDeliverer(t, gated, Limits{Total: 4, PerGateway: 2})
		waitFor(t, "five pushes while the commit is held", func() bool { got, _, _ := gw.state(); return len(got) == 5 })
		close(gated.gate)
		waitFor(t, "an empty queue", func() bool {
			depth, err := store.QueueDepth(ctx)
			return err == nil && depth == 0
		})
	})
}

// TestDeliveryGoesOnWhileCommitsWait: while removing delivered pushes from the queue is
// held up (on SQLite a commit waits for the push reader's transaction to end), a pusher
// with 50 pushes queued gets maxUnacked (40) of them, more than one read of its queue (20:
// it waited for the removals of each read's pushes before reading on), and no more until
// the removals commit; then the others arrive, each push once, and the queue empties.
func TestDeliveryGoesOnWhileCommitsWait(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		store, err := pushsql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		gw := &testGateway{}
		addPushers(t, store, startGateway(t, gw), "@a:test")
		for range 50 {
			queueBadges(t, db, store, "@a:test")
		}
		gated := &countingDB{Database: store, gate: make(chan struct{})}
		startDeliverer(t, gated, Limits{Total: 4, PerGateway: 2})
		waitFor(t, "40 pushes while the commits are held", func() bool { got, _, _ := gw.state(); return len(got) >= maxUnacked })
		time.Sleep(300 * time.Millisecond)
		if got, _, _ := gw.state(); len(got) != maxUnacked {
			t.Fatalf("%d pushes sent with their removals held, want %d", len(got), maxUnacked)
		}
		close(gated.gate)
		waitFor(t, "an empty queue", func() bool {
			depth, err := store.QueueDepth(ctx)
			return err == nil && depth == 0
		})
		if got, _, _ := gw.state(); len(got) != 50 {
			t.Fatalf("the gateway got %d pushes, want 50", len(got))
		}
	})
}
