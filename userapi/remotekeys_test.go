package userapi_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/userapi"
	"github.com/matrix-org/dendrite/userapi/api"
)

// remoteServer stands for another server's /user/devices: it answers with list, or fails
// while down, and counts the requests.
type remoteServer struct {
	mu      sync.Mutex
	list    api.QueryDeviceListResponse
	down    bool
	fetches int
}

func (r *remoteServer) FetchUserDevices(_ context.Context, userID string) (*api.QueryDeviceListResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fetches++
	if r.down {
		return nil, errors.New("the server could not be reached")
	}
	l := r.list
	return &l, nil
}

func (r *remoteServer) set(f func(r *remoteServer)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

func (r *remoteServer) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.fetches
}

// keyChangeLog is an embedded log on a database of its own, as in the monolith: the
// consumer produces from inside its transaction, which on one SQLite database would wait
// for itself.
func keyChangeLog(t *testing.T, ctx context.Context) eventlog.Log {
	t.Helper()
	logDB, err := sqlutil.Open("file:" + t.TempDir() + "/log.db")
	if err != nil {
		t.Fatal(err)
	}
	log, err := eventlog.NewEmbedded(ctx, logDB, eventlog.Config{DefaultPartitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = log.Close()   // nothing to do about a failed close in cleanup
		_ = logDB.Close() // likewise
	})
	return log
}

// waitAnnouncements waits (a minute at most) until the key change topic holds n records.
func waitAnnouncements(t *testing.T, log eventlog.Log, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	got := 0
	err := log.Consume(ctx, keyTopic, 0, 0, func(_ context.Context, recs []eventlog.Record) error {
		got += len(recs)
		if got >= n {
			cancel()
		}
		return nil
	})
	if got < n {
		t.Fatalf("%d of %d key change announcements: %v", got, n, err)
	}
}

// waitApplied waits (a minute at most) until the userapi has committed n device list
// updates: the consumer announces a change from inside its transaction, so an announcement
// can be read a moment before the change it announces is committed.
func waitApplied(t *testing.T, ctx context.Context, db *sqlutil.DB, n int64) {
	t.Helper()
	offsets, err := eventlog.NewOffsetStore(ctx, db, "userapi")
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(10 * time.Millisecond) {
		next, err := offsets.Next(ctx, "devicelists", 0)
		if err != nil {
			t.Fatal(err)
		}
		if next >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d device list updates applied", next, n)
		}
	}
}

// TestRemoteDeviceListCache: other servers' users' device lists are cached from their
// m.device_list_update EDUs and from /user/devices. A first update (nothing cached) and an
// update whose prev_id the cache has not seen mark the list stale and fetch it again; an
// update that follows on is applied without a fetch; /keys/query answers from a fresh cache
// without asking, fetches a stale list, answers from the stale cache when the server is
// down, and reports a failure for a user it has nothing of. Keys that are not the device's
// are dropped (the device stays, without keys); a list of another user is refused.
func TestRemoteDeviceListCache(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		log := keyChangeLog(t, ctx)
		carol := "@carol:remote.example"
		master := test.NewCrossSigningKey(t, carol, "master")
		remote := &remoteServer{list: api.QueryDeviceListResponse{UserID: carol, StreamID: 2, Devices: []api.DeviceListEntry{
			{DeviceID: "C1", Keys: test.NewDeviceKeys(t, carol, "C1").JSON(t)}, {DeviceID: "C2", DisplayName: "tablet"},
		}, MasterKey: master.JSON(t, nil), SelfSigningKey: test.NewCrossSigningKey(t, carol, "self_signing").JSON(t, master)}}
		ua, err := userapi.New(ctx, userapi.Deps{Cfg: &config.UserAPI{BCryptCost: 4}, ServerName: serverName, DB: db, Log: log,
			KeyChangeTopic: keyTopic, DeviceListTopic: "devicelists", Remote: remote})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- ua.Run(ctx) }()
		u := ua.API()
		p := &api.DeviceListProducer{Log: log, Topic: "devicelists"}
		send := func(dl api.DeviceListUpdate) {
			t.Helper()
			dl.UserID = carol
			if err := p.InputDeviceListUpdate(ctx, &api.InputDeviceListUpdate{Origin: "remote.example", UserID: carol, DeviceList: &dl}); err != nil {
				t.Fatal(err)
			}
		}
		query := func(users ...string) *api.QueryRemoteKeysResponse {
			t.Helper()
			req := &api.QueryRemoteKeysRequest{DeviceKeys: map[string][]string{}}
			for _, u := range users {
				req.DeviceKeys[u] = nil
			}
			res, err := u.QueryRemoteKeys(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		devices := func(res *api.QueryRemoteKeysResponse) map[string]string {
			out := map[string]string{}
			for id, raw := range res.DeviceKeys[carol] {
				var k struct {
					Keys     map[string]string `json:"keys"`
					Unsigned struct {
						Name string `json:"device_display_name"`
					} `json:"unsigned"`
				}
				if err := json.Unmarshal(raw, &k); err != nil {
					t.Fatal(err)
				}
				out[id] = k.Unsigned.Name
				if len(k.Keys) > 0 {
					out[id] += "+keys"
				}
			}
			return out
		}

		// Nothing cached: the first update marks the list stale and it is fetched (the
		// update's announcement, then the fetch's).
		send(api.DeviceListUpdate{DeviceID: "C1", StreamID: 1})
		waitAnnouncements(t, log, 2)
		waitApplied(t, ctx, db, 1)
		res := query(carol)
		if got := devices(res); len(got) != 2 || got["C1"] != "+keys" || got["C2"] != "tablet" || remote.count() != 1 ||
			res.MasterKeys[carol] == nil || res.SelfSigningKeys[carol] == nil {
			t.Fatalf("after the first update: %v %+v, %d fetches", got, res, remote.count())
		}

		// An update following on from the cached stream is applied without a fetch.
		send(api.DeviceListUpdate{DeviceID: "C2", DisplayName: "phone", StreamID: 3, PrevID: []int64{2}})
		waitAnnouncements(t, log, 3)
		waitApplied(t, ctx, db, 2)
		if got := devices(query(carol)); got["C2"] != "phone" || remote.count() != 1 {
			t.Fatalf("after a following update: %v, %d fetches", got, remote.count())
		}

		// A signing key update (no stream ID; it may come with new signatures on devices)
		// marks the list stale: the next query fetches it.
		remote.set(func(r *remoteServer) {
			r.list.StreamID = 3
			r.list.Devices[1].DisplayName = "phone"
		})
		if err := p.InputDeviceListUpdate(ctx, &api.InputDeviceListUpdate{Origin: "remote.example", UserID: carol,
			SigningKeys: json.RawMessage(`{"user_id":"` + carol + `","master_key":` + string(master.JSON(t, nil)) + `}`)}); err != nil {
			t.Fatal(err)
		}
		waitAnnouncements(t, log, 4)
		waitApplied(t, ctx, db, 3)
		if got := devices(query(carol)); len(got) != 2 || got["C2"] != "phone" || remote.count() != 2 {
			t.Fatalf("after a signing key update: %v, %d fetches", got, remote.count())
		}

		// A missed update (prev_id 4 unseen): stale, fetched again; C3's keys name another
		// device and are dropped.
		remote.set(func(r *remoteServer) {
			r.list.StreamID = 5
			r.list.Devices = []api.DeviceListEntry{{DeviceID: "C1", Keys: test.NewDeviceKeys(t, carol, "C1").JSON(t)},
				{DeviceID: "C3", Keys: test.NewDeviceKeys(t, carol, "OTHER").JSON(t)}}
		})
		send(api.DeviceListUpdate{DeviceID: "C3", StreamID: 5, PrevID: []int64{4}})
		waitAnnouncements(t, log, 7)
		waitApplied(t, ctx, db, 4)
		if got := devices(query(carol)); len(got) != 2 || got["C1"] != "+keys" || got["C3"] != "" || remote.count() != 3 {
			t.Fatalf("after a missed update: %v, %d fetches", got, remote.count())
		}

		// The server goes down, another update is missed: the stale cache, with the update
		// applied, answers, and no failure is reported; a user with nothing cached fails.
		remote.set(func(r *remoteServer) { r.down = true })
		send(api.DeviceListUpdate{DeviceID: "C3", Deleted: true, StreamID: 8, PrevID: []int64{7}})
		waitAnnouncements(t, log, 8)
		waitApplied(t, ctx, db, 5)
		res = query(carol, "@dave:remote.example")
		if got := devices(res); len(got) != 1 || got["C1"] != "+keys" || len(res.DeviceKeys) != 1 || res.Failures["remote.example"] == nil {
			t.Fatalf("with the server down: %v %+v", got, res)
		}

		// The server answers with another user's list: refused, nothing cached.
		remote.set(func(r *remoteServer) { r.down = false })
		res = query("@dave:remote.example")
		if len(res.DeviceKeys) != 0 || res.Failures["remote.example"] == nil {
			t.Fatalf("another user's list for dave: %+v", res)
		}
		cancel()
		if err = <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Fatal(err)
		}
	})
}

// TestSignaturesOnRemoteKeys: a local user's user-signing key signs another server's user's
// master key, read from the copy of their device list (fetched when nothing is cached).
// The signer sees the signature in /keys/query, another local user does not; the change
// is announced to the signer alone (notify_only), so no other server is told. Their
// devices, unknown keys, forged signatures and objects that are not the stored key fail
// per key, and nothing of them is stored.
func TestSignaturesOnRemoteKeys(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		log := keyChangeLog(t, ctx)
		carol := "@carol:remote.example"
		carolMaster := test.NewCrossSigningKey(t, carol, "master")
		remote := &remoteServer{list: api.QueryDeviceListResponse{UserID: carol, StreamID: 2, Devices: []api.DeviceListEntry{
			{DeviceID: "C1", Keys: test.NewDeviceKeys(t, carol, "C1").JSON(t)}}, MasterKey: carolMaster.JSON(t, nil)}}
		ua, err := userapi.New(ctx, userapi.Deps{Cfg: &config.UserAPI{BCryptCost: 4}, ServerName: serverName, DB: db, Log: log,
			KeyChangeTopic: keyTopic, DeviceListTopic: "devicelists", Remote: remote})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- ua.Run(ctx) }()
		u := ua.API()
		alice, bob := create(t, u, "alice", "pw").UserID, create(t, u, "bob", "pw").UserID
		master := test.NewCrossSigningKey(t, alice, "master")
		user := test.NewCrossSigningKey(t, alice, "user_signing")
		if _, err = u.PerformUploadDeviceSigningKeys(ctx, &api.PerformUploadDeviceSigningKeysRequest{UserID: alice,
			MasterKey: master.JSON(t, nil), UserSigningKey: user.JSON(t, master)}); err != nil {
			t.Fatal(err)
		}
		carolKey := carolMaster.JSON(t, nil)
		sign := func(sigs map[string]json.RawMessage) map[string]json.RawMessage {
			t.Helper()
			res, err := u.PerformUploadSignatures(ctx, &api.PerformUploadSignaturesRequest{UserID: alice,
				Signatures: map[string]map[string]json.RawMessage{carol: sigs}})
			if err != nil {
				t.Fatal(err)
			}
			return res.Failures[carol]
		}
		errcode := func(raw json.RawMessage) string {
			var e struct {
				Code string `json:"errcode"`
			}
			_ = json.Unmarshal(raw, &e) // an empty code fails the comparison below
			return e.Code
		}
		failures := sign(map[string]json.RawMessage{
			"C1":                 signedBy(t, user, remote.list.Devices[0].Keys),
			"nokey":              signedBy(t, user, carolKey),
			carolMaster.Public(): signedBy(t, test.NewCrossSigningKey(t, alice, "user_signing"), carolKey),
		})
		if errcode(failures["C1"]) != "M_INVALID_PARAM" || errcode(failures["nokey"]) != "M_NOT_FOUND" ||
			errcode(failures[carolMaster.Public()]) != "M_INVALID_SIGNATURE" || remote.count() != 1 {
			t.Fatalf("failures %s, %d fetches", failures, remote.count())
		}
		// The signed object must be carol's master key as fetched.
		var other map[string]any
		_ = json.Unmarshal(carolKey, &other) // test data
		other["usage"] = []string{"master", "self_signing"}
		otherJSON, _ := json.Marshal(other) // plain data
		if f := sign(map[string]json.RawMessage{carolMaster.Public(): user.Sign(t, otherJSON)}); errcode(f[carolMaster.Public()]) != "M_INVALID_PARAM" {
			t.Fatalf("a signed object that is not the stored key: %s", f)
		}

		signature := func(viewer string) string {
			t.Helper()
			q, err := u.QueryRemoteKeys(ctx, &api.QueryRemoteKeysRequest{UserID: viewer, DeviceKeys: map[string][]string{carol: nil}})
			if err != nil {
				t.Fatal(err)
			}
			var k struct {
				Signatures map[string]map[string]string `json:"signatures"`
			}
			if err = json.Unmarshal(q.MasterKeys[carol], &k); err != nil {
				t.Fatalf("carol's master key as %s sees it: %s", viewer, q.MasterKeys[carol])
			}
			return k.Signatures[alice]["ed25519:"+user.Public()]
		}
		if s := signature(alice); s != "" {
			t.Fatalf("a signature that failed was stored: %s", s)
		}
		if f := sign(map[string]json.RawMessage{carolMaster.Public(): signedBy(t, user, carolKey)}); len(f) != 0 {
			t.Fatalf("signature of carol's master key: %s", f)
		}
		if signature(alice) == "" || signature(bob) != "" || signature("") != "" {
			t.Fatalf("alice's signature on carol's master key: alice sees %q, bob %q", signature(alice), signature(bob))
		}
		q, err := u.QueryRemoteKeys(ctx, &api.QueryRemoteKeysRequest{UserID: alice, DeviceKeys: map[string][]string{carol: nil}})
		if err != nil {
			t.Fatal(err)
		}
		if err = gomatrixserverlib.VerifyJSON(alice, gomatrixserverlib.KeyID("ed25519:"+user.Public()), user.Private.Public().(ed25519.PublicKey), q.MasterKeys[carol]); err != nil {
			t.Fatalf("alice's signature on carol's master key as alice sees it: %v", err)
		}

		// Announced: alice's cross-signing keys, carol's fetched list, the signature for
		// alice alone.
		var last api.OutputKeyChangeEvent
		recs := collectTopic(t, log, keyTopic, 3)
		if err = json.Unmarshal(recs[2].Value, &last); err != nil || string(recs[2].Key) != alice || last.CrossSigning == nil ||
			last.CrossSigning.UserID != carol || last.CrossSigning.NotifyOnly != alice {
			t.Fatalf("announcement of the signature: %s %s", recs[2].Key, recs[2].Value)
		}
		cancel()
		if err = <-done; err != nil {
			t.Fatal(err)
		}
	})
}
