package userapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/userapi"
	"github.com/matrix-org/dendrite/userapi/api"
)

const serverName = "test.local"

const topic = "TestOutputClientData"

func newAPI(t *testing.T, db *sqlutil.DB, log eventlog.Log) api.ClientUserAPI {
	t.Helper()
	ua, err := userapi.New(context.Background(), userapi.Deps{
		Cfg: &config.UserAPI{BCryptCost: 4}, ServerName: serverName, DB: db, Log: log, ClientDataTopic: topic,
	})
	if err != nil {
		t.Fatal(err)
	}
	return ua.API()
}

func wantCode(t *testing.T, err error, code string) {
	t.Helper()
	var merr *matrixerr.Error
	if !errors.As(err, &merr) || merr.Code != code {
		t.Fatalf("want %s, got %v", code, err)
	}
}

func create(t testing.TB, u api.ClientUserAPI, localpart, password string) *api.Account {
	t.Helper()
	res, err := u.PerformAccountCreation(context.Background(), &api.PerformAccountCreationRequest{Localpart: localpart, Password: password, AccountType: api.AccountTypeUser})
	if err != nil {
		t.Fatalf("create %s: %v", localpart, err)
	}
	return res.Account
}

func login(t *testing.T, u api.ClientUserAPI, localpart string, deviceID *string) *api.PerformDeviceCreationResponse {
	t.Helper()
	name := "phone"
	res, err := u.PerformDeviceCreation(context.Background(), &api.PerformDeviceCreationRequest{Localpart: localpart, DeviceID: deviceID, DisplayName: &name, IP: "127.0.0.1"})
	if err != nil {
		t.Fatalf("create device: %v", err)
	}
	return res
}

func TestAccounts(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u := newAPI(t, db, nil)
		acc := create(t, u, "alice", "correct horse")
		if acc.UserID != "@alice:"+serverName || acc.AccountType != api.AccountTypeUser {
			t.Fatalf("account %+v", acc)
		}
		_, err := u.PerformAccountCreation(ctx, &api.PerformAccountCreationRequest{Localpart: "alice", Password: "x"})
		wantCode(t, err, "M_USER_IN_USE")
		for _, bad := range []string{"", "Alice", "al ice", "ali:ce", "é", strings.Repeat("a", 250)} {
			_, err = u.PerformAccountCreation(ctx, &api.PerformAccountCreationRequest{Localpart: bad, Password: "x"})
			wantCode(t, err, "M_INVALID_USERNAME")
			_, err = u.QueryLocalpartAvailable(ctx, &api.QueryLocalpartAvailableRequest{Localpart: bad})
			wantCode(t, err, "M_INVALID_USERNAME")
		}
		create(t, u, "a-z0.9_=/+", "pw")
		_, err = u.PerformAccountCreation(ctx, &api.PerformAccountCreationRequest{Localpart: "nopass"})
		wantCode(t, err, "M_MISSING_PARAM")

		for name, want := range map[string]bool{"alice": false, "bob": true} {
			res, err := u.QueryLocalpartAvailable(ctx, &api.QueryLocalpartAvailableRequest{Localpart: name})
			if err != nil || res.Available != want {
				t.Fatalf("available(%s) = %+v, %v", name, res, err)
			}
		}

		res, err := u.QueryAccountByPassword(ctx, &api.QueryAccountByPasswordRequest{Localpart: "alice", Password: "correct horse"})
		if err != nil || res.Account.UserID != acc.UserID {
			t.Fatalf("good password: %+v %v", res, err)
		}
		_, err = u.QueryAccountByPassword(ctx, &api.QueryAccountByPasswordRequest{Localpart: "alice", Password: "wrong"})
		wantCode(t, err, "M_FORBIDDEN")
		_, err = u.QueryAccountByPassword(ctx, &api.QueryAccountByPasswordRequest{Localpart: "nobody", Password: "correct horse"})
		wantCode(t, err, "M_FORBIDDEN")

		// bcrypt reads 72 bytes; passwords differing after that must still differ.
		long := strings.Repeat("p", 100)
		create(t, u, "long", long+"1")
		if _, err = u.QueryAccountByPassword(ctx, &api.QueryAccountByPasswordRequest{Localpart: "long", Password: long + "1"}); err != nil {
			t.Fatalf("long password: %v", err)
		}
		_, err = u.QueryAccountByPassword(ctx, &api.QueryAccountByPasswordRequest{Localpart: "long", Password: long + "2"})
		wantCode(t, err, "M_FORBIDDEN")
	})
}

func TestDevicesAndTokens(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u := newAPI(t, db, nil)
		create(t, u, "alice", "pw")
		create(t, u, "bob", "pw")
		first := login(t, u, "alice", nil)
		if len(first.Device.DeviceID) != 10 || strings.ToUpper(first.Device.DeviceID) != first.Device.DeviceID {
			t.Fatalf("generated device ID %q", first.Device.DeviceID)
		}
		if !strings.HasPrefix(first.AccessToken, "syt_") || first.Device.UserID != "@alice:"+serverName {
			t.Fatalf("device %+v token %q", first.Device, first.AccessToken)
		}
		q, err := u.QueryAccessToken(ctx, &api.QueryAccessTokenRequest{AccessToken: first.AccessToken})
		if err != nil || q.Device == nil || q.Device.DeviceID != first.Device.DeviceID || q.Device.DisplayName != "phone" {
			t.Fatalf("lookup: %+v %v", q, err)
		}
		if q, err = u.QueryAccessToken(ctx, &api.QueryAccessTokenRequest{AccessToken: "syt_unknown"}); err != nil || q.Device != nil {
			t.Fatalf("unknown token: %+v %v", q, err)
		}
		var stored int
		if err = db.QueryRowContext(ctx, "SELECT COUNT(*) FROM userapi_devices WHERE token_hash = $1", []byte(first.AccessToken)).Scan(&stored); err != nil || stored != 0 {
			t.Fatalf("the token itself is stored: %d %v", stored, err)
		}

		// A re-login with the same device ID replaces the token and keeps the name.
		again := login(t, u, "alice", &first.Device.DeviceID)
		if q, _ = u.QueryAccessToken(ctx, &api.QueryAccessTokenRequest{AccessToken: first.AccessToken}); q.Device != nil {
			t.Fatal("old token of a re-logged-in device still works")
		}
		if q, _ = u.QueryAccessToken(ctx, &api.QueryAccessTokenRequest{AccessToken: again.AccessToken}); q.Device == nil {
			t.Fatal("new token does not work")
		}
		custom := "MYDEVICE"
		login(t, u, "alice", &custom)
		third := login(t, u, "alice", nil)
		bobDev := login(t, u, "bob", &custom)
		_, err = u.PerformDeviceCreation(ctx, &api.PerformDeviceCreationRequest{Localpart: "nobody"})
		wantCode(t, err, "M_NOT_FOUND")

		devs, err := u.QueryDevices(ctx, &api.QueryDevicesRequest{UserID: "@alice:" + serverName})
		if err != nil || len(devs.Devices) != 3 {
			t.Fatalf("devices: %+v %v", devs, err)
		}
		name := "laptop"
		if _, err = u.PerformDeviceUpdate(ctx, &api.PerformDeviceUpdateRequest{UserID: "@alice:" + serverName, DeviceID: custom, DisplayName: &name}); err != nil {
			t.Fatal(err)
		}
		_, err = u.PerformDeviceUpdate(ctx, &api.PerformDeviceUpdateRequest{UserID: "@alice:" + serverName, DeviceID: "NOPE", DisplayName: &name})
		wantCode(t, err, "M_NOT_FOUND")

		if _, err = u.PerformDeviceDeletion(ctx, &api.PerformDeviceDeletionRequest{UserID: "@alice:" + serverName, DeviceIDs: []string{custom}}); err != nil {
			t.Fatal(err)
		}
		if _, err = u.PerformDeviceDeletion(ctx, &api.PerformDeviceDeletionRequest{UserID: "@alice:" + serverName, All: true, ExceptDeviceID: third.Device.DeviceID}); err != nil {
			t.Fatal(err)
		}
		devs, _ = u.QueryDevices(ctx, &api.QueryDevicesRequest{UserID: "@alice:" + serverName})
		if len(devs.Devices) != 1 || devs.Devices[0].DeviceID != third.Device.DeviceID {
			t.Fatalf("after deletions: %+v", devs.Devices)
		}
		// Bob's device with the same ID as Alice's deleted one is untouched.
		if q, _ = u.QueryAccessToken(ctx, &api.QueryAccessTokenRequest{AccessToken: bobDev.AccessToken}); q.Device == nil {
			t.Fatal("another user's device was deleted")
		}
	})
}

func TestProfiles(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u := newAPI(t, db, nil)
		create(t, u, "alice", "pw")
		p, err := u.QueryProfile(ctx, &api.QueryProfileRequest{UserID: "@alice:" + serverName})
		if err != nil || p.DisplayName != "alice" || p.AvatarURL != "" {
			t.Fatalf("initial profile %+v %v", p, err)
		}
		for _, unknown := range []string{"@bob:" + serverName, "@alice:elsewhere", "garbage"} {
			_, err = u.QueryProfile(ctx, &api.QueryProfileRequest{UserID: unknown})
			wantCode(t, err, "M_NOT_FOUND")
		}
		set, err := u.PerformSetDisplayName(ctx, &api.PerformSetDisplayNameRequest{Localpart: "alice", DisplayName: "Alice"})
		if err != nil || !set.Changed {
			t.Fatalf("set name: %+v %v", set, err)
		}
		if set, _ = u.PerformSetDisplayName(ctx, &api.PerformSetDisplayNameRequest{Localpart: "alice", DisplayName: "Alice"}); set.Changed {
			t.Fatal("setting the same name reports a change")
		}
		if av, err := u.PerformSetAvatarURL(ctx, &api.PerformSetAvatarURLRequest{Localpart: "alice", AvatarURL: "mxc://a/b"}); err != nil || !av.Changed {
			t.Fatalf("set avatar: %+v %v", av, err)
		}
		_, err = u.PerformSetAvatarURL(ctx, &api.PerformSetAvatarURLRequest{Localpart: "bob", AvatarURL: "mxc://a/b"})
		wantCode(t, err, "M_NOT_FOUND")
		p, _ = u.QueryProfile(ctx, &api.QueryProfileRequest{UserID: "@alice:" + serverName})
		if p.DisplayName != "Alice" || p.AvatarURL != "mxc://a/b" {
			t.Fatalf("profile %+v", p)
		}
	})
}

func TestAccountDataAndFilters(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		log, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = log.Close() }) // nothing to do about a failed close in cleanup
		u := newAPI(t, db, log)
		alice := create(t, u, "alice", "pw").UserID
		put := func(roomID, typ, content string) {
			t.Helper()
			if _, err := u.PerformAccountData(ctx, &api.PerformAccountDataRequest{UserID: alice, RoomID: roomID, DataType: typ, Data: json.RawMessage(content)}); err != nil {
				t.Fatalf("put %s %s: %v", roomID, typ, err)
			}
		}
		put("", "m.direct", `{"a":1}`)
		put("", "m.direct", `{"a":2}`)
		put("!r:x", "m.tag", `{"tags":{}}`)
		_, err = u.PerformAccountData(ctx, &api.PerformAccountDataRequest{UserID: alice, DataType: "x", Data: json.RawMessage(`[1]`)})
		wantCode(t, err, "M_BAD_JSON")

		all, err := u.QueryAccountData(ctx, &api.QueryAccountDataRequest{UserID: alice})
		if err != nil || string(all.Global["m.direct"]) != `{"a":2}` || string(all.Rooms["!r:x"]["m.tag"]) != `{"tags":{}}` {
			t.Fatalf("all account data: %+v %v", all, err)
		}
		one, _ := u.QueryAccountData(ctx, &api.QueryAccountDataRequest{UserID: alice, RoomID: "!r:x", DataType: "m.tag"})
		if len(one.Global) != 0 || len(one.Rooms["!r:x"]) != 1 {
			t.Fatalf("room account data: %+v", one)
		}
		none, _ := u.QueryAccountData(ctx, &api.QueryAccountDataRequest{UserID: alice, DataType: "m.nothing"})
		if len(none.Global)+len(none.Rooms) != 0 {
			t.Fatalf("missing type: %+v", none)
		}

		recs := collect(t, log, 3)
		var last api.OutputClientData
		if err = json.Unmarshal(recs[2].Value, &last); err != nil {
			t.Fatal(err)
		}
		if string(recs[2].Key) != alice || last.Type != api.OutputClientDataTypeAccountData ||
			last.AccountData.RoomID != "!r:x" || last.AccountData.Type != "m.tag" || string(last.AccountData.Content) != `{"tags":{}}` {
			t.Fatalf("last message %s %+v", recs[2].Key, last.AccountData)
		}

		f1, err := u.PerformPutFilter(ctx, &api.PerformPutFilterRequest{Localpart: "alice", Filter: json.RawMessage(`{"room":{}}`)})
		if err != nil {
			t.Fatal(err)
		}
		f2, _ := u.PerformPutFilter(ctx, &api.PerformPutFilterRequest{Localpart: "alice", Filter: json.RawMessage(`{"presence":{}}`)})
		f3, _ := u.PerformPutFilter(ctx, &api.PerformPutFilterRequest{Localpart: "alice", Filter: json.RawMessage(`{"room":{}}`)})
		if f1.FilterID == f2.FilterID || f1.FilterID != f3.FilterID || strings.Trim(f1.FilterID, "0123456789") != "" {
			t.Fatalf("filter IDs %s %s %s", f1.FilterID, f2.FilterID, f3.FilterID)
		}
		got, err := u.QueryFilter(ctx, &api.QueryFilterRequest{Localpart: "alice", FilterID: f2.FilterID})
		if err != nil || string(got.Filter) != `{"presence":{}}` {
			t.Fatalf("filter %s %v", got.Filter, err)
		}
		for _, id := range []string{"999", "x", ""} {
			_, err = u.QueryFilter(ctx, &api.QueryFilterRequest{Localpart: "alice", FilterID: id})
			wantCode(t, err, "M_NOT_FOUND")
		}
		_, err = u.QueryFilter(ctx, &api.QueryFilterRequest{Localpart: "bob", FilterID: f1.FilterID})
		wantCode(t, err, "M_NOT_FOUND")
	})
}

// collect reads n records from partition 0 of the topic, failing after a deadline.
func collect(t *testing.T, log eventlog.Log, n int) []eventlog.Record {
	t.Helper()
	return collectTopic(t, log, topic, n)
}

// collectTopic reads n records from partition 0 of a topic, failing after a deadline.
func collectTopic(t *testing.T, log eventlog.Log, topic string, n int) []eventlog.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out []eventlog.Record
	err := log.Consume(ctx, topic, 0, 0, func(_ context.Context, recs []eventlog.Record) error {
		out = append(out, recs...)
		if len(out) >= n {
			cancel()
		}
		return nil
	})
	if len(out) < n {
		t.Fatalf("got %d of %d records: %v", len(out), n, err)
	}
	return out
}

func TestMigrateTwice(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		u := newAPI(t, db, nil)
		create(t, u, "alice", "pw")
		// Starting again on the same database keeps the data.
		u = newAPI(t, db, nil)
		if _, err := u.QueryAccountByPassword(context.Background(), &api.QueryAccountByPasswordRequest{Localpart: "alice", Password: "pw"}); err != nil {
			t.Fatal(err)
		}
	})
}

// countingTokens counts the token lookups that reach the userapi.
type countingTokens struct {
	api.ClientUserAPI
	lookups int
}

func (c *countingTokens) QueryAccessToken(ctx context.Context, req *api.QueryAccessTokenRequest) (*api.QueryAccessTokenResponse, error) {
	c.lookups++
	return c.ClientUserAPI.QueryAccessToken(ctx, req)
}

func TestDeviceCache(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u := newAPI(t, db, nil)
		counted := &countingTokens{ClientUserAPI: u}
		c := api.NewDeviceCache(counted, time.Hour)
		create(t, u, "alice", "pw")
		lookup := func(token string) *api.Device {
			t.Helper()
			res, err := c.QueryAccessToken(ctx, &api.QueryAccessTokenRequest{AccessToken: token})
			if err != nil {
				t.Fatal(err)
			}
			return res.Device
		}
		phone := login(t, u, "alice", nil)
		laptop := login(t, u, "alice", nil)
		for range 3 {
			if d := lookup(phone.AccessToken); d == nil || d.DeviceID != phone.Device.DeviceID {
				t.Fatalf("lookup: %+v", d)
			}
		}
		if counted.lookups != 1 {
			t.Fatalf("%d lookups reached the userapi, want 1", counted.lookups)
		}
		// Unknown tokens are not remembered: asked every time.
		lookup("syt_unknown")
		lookup("syt_unknown")
		if counted.lookups != 3 {
			t.Fatalf("%d lookups, want 3", counted.lookups)
		}

		// A logout through the cache is seen at once, and only for that device.
		lookup(laptop.AccessToken)
		if _, err := c.PerformDeviceDeletion(ctx, &api.PerformDeviceDeletionRequest{UserID: phone.Device.UserID, DeviceIDs: []string{phone.Device.DeviceID}}); err != nil {
			t.Fatal(err)
		}
		if lookup(phone.AccessToken) != nil {
			t.Fatal("logged-out token still works through the cache")
		}
		before := counted.lookups
		if lookup(laptop.AccessToken) == nil || counted.lookups != before {
			t.Fatal("another device's cached token was dropped")
		}
		// A re-login with the same device ID through the cache ends the old token.
		again, err := c.PerformDeviceCreation(ctx, &api.PerformDeviceCreationRequest{Localpart: "alice", DeviceID: &laptop.Device.DeviceID})
		if err != nil {
			t.Fatal(err)
		}
		if lookup(laptop.AccessToken) != nil || lookup(again.AccessToken) == nil {
			t.Fatal("re-login through the cache: old token works or new one does not")
		}
		// Logout of every device.
		if _, err = c.PerformDeviceDeletion(ctx, &api.PerformDeviceDeletionRequest{UserID: phone.Device.UserID, All: true}); err != nil {
			t.Fatal(err)
		}
		if lookup(again.AccessToken) != nil {
			t.Fatal("token works after logout/all")
		}

		// A logout that bypasses the cache (another process) is seen once the entry expires.
		short := api.NewDeviceCache(u, 50*time.Millisecond)
		tablet := login(t, u, "alice", nil)
		if res, _ := short.QueryAccessToken(ctx, &api.QueryAccessTokenRequest{AccessToken: tablet.AccessToken}); res.Device == nil {
			t.Fatal("new token unknown")
		}
		if _, err = u.PerformDeviceDeletion(ctx, &api.PerformDeviceDeletionRequest{UserID: tablet.Device.UserID, All: true}); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			res, err := short.QueryAccessToken(ctx, &api.QueryAccessTokenRequest{AccessToken: tablet.AccessToken})
			if err != nil {
				t.Fatal(err)
			}
			if res.Device == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("revoked token still cached after the TTL")
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// TestRoomTagsConcurrently adds many tags to one room at once and removes some: every
// change survives, because each is applied to the stored m.tag in one transaction.
func TestRoomTagsConcurrently(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		u := newAPI(t, db, nil)
		create(t, u, "alice", "pw")
		ctx, user, room := context.Background(), "@alice:"+serverName, "!r:"+serverName
		const n = 16
		errs := make(chan error, n)
		for i := 0; i < n; i++ {
			go func() {
				_, err := u.PerformRoomTag(ctx, &api.PerformRoomTagRequest{UserID: user, RoomID: room, Tag: fmt.Sprintf("u.t%d", i), Content: json.RawMessage(`{"order":0.5}`)})
				errs <- err
			}()
		}
		for i := 0; i < n; i++ {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		if _, err := u.PerformRoomTag(ctx, &api.PerformRoomTagRequest{UserID: user, RoomID: room, Tag: "u.t3"}); err != nil {
			t.Fatal(err)
		}
		res, err := u.QueryAccountData(ctx, &api.QueryAccountDataRequest{UserID: user, RoomID: room, DataType: "m.tag"})
		if err != nil {
			t.Fatal(err)
		}
		var content struct {
			Tags map[string]json.RawMessage `json:"tags"`
		}
		if err = json.Unmarshal(res.Rooms[room]["m.tag"], &content); err != nil || len(content.Tags) != n-1 || content.Tags["u.t3"] != nil {
			t.Fatalf("m.tag %s %v", res.Rooms[room]["m.tag"], err)
		}
		_, err = u.PerformRoomTag(ctx, &api.PerformRoomTagRequest{UserID: user, RoomID: room, Tag: "u.x", Content: json.RawMessage(`[1]`)})
		wantCode(t, err, "M_BAD_JSON")
		_, err = u.PerformRoomTag(ctx, &api.PerformRoomTagRequest{UserID: user, RoomID: room, Tag: "u.x", Content: json.RawMessage(`{"pad":"` + strings.Repeat("x", 70000) + `"}`)})
		wantCode(t, err, "M_TOO_LARGE")
	})
}

// TestGuestAccounts: a guest account has no password, its tokens say guest, and upgrading it
// gives it a password and makes those same tokens an ordinary account's; only a guest
// account can be upgraded, once.
func TestGuestAccounts(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u := newAPI(t, db, nil)
		create(t, u, "alice", "pw")
		if _, err := u.PerformAccountCreation(ctx, &api.PerformAccountCreationRequest{Localpart: "g1", AccountType: api.AccountTypeGuest}); err != nil {
			t.Fatal(err)
		}
		dev := login(t, u, "g1", nil)
		tokenType := func(token string) api.AccountType {
			t.Helper()
			res, err := u.QueryAccessToken(ctx, &api.QueryAccessTokenRequest{AccessToken: token})
			if err != nil || res.Device == nil {
				t.Fatalf("token lookup: %+v %v", res, err)
			}
			return res.Device.AccountType
		}
		if got := tokenType(dev.AccessToken); got != api.AccountTypeGuest {
			t.Fatalf("guest token account type %d", got)
		}
		if got := tokenType(login(t, u, "alice", nil).AccessToken); got != api.AccountTypeUser {
			t.Fatalf("user token account type %d", got)
		}
		_, err := u.PerformGuestUpgrade(ctx, &api.PerformGuestUpgradeRequest{Localpart: "alice", Password: "x"})
		wantCode(t, err, "M_FORBIDDEN")
		res, err := u.PerformGuestUpgrade(ctx, &api.PerformGuestUpgradeRequest{Localpart: "g1", Password: "new pw"})
		if err != nil || res.Account.AccountType != api.AccountTypeUser || res.Account.UserID != "@g1:"+serverName {
			t.Fatalf("upgrade: %+v %v", res, err)
		}
		if got := tokenType(dev.AccessToken); got != api.AccountTypeUser {
			t.Fatalf("upgraded token account type %d", got)
		}
		if _, err = u.QueryAccountByPassword(ctx, &api.QueryAccountByPasswordRequest{Localpart: "g1", Password: "new pw"}); err != nil {
			t.Fatalf("upgraded password: %v", err)
		}
		_, err = u.PerformGuestUpgrade(ctx, &api.PerformGuestUpgradeRequest{Localpart: "g1", Password: "x"})
		wantCode(t, err, "M_FORBIDDEN")
		acc, err := u.QueryAccount(ctx, &api.QueryAccountRequest{Localpart: "nobody"})
		if err != nil || acc.Account != nil {
			t.Fatalf("unknown account: %+v %v", acc, err)
		}
	})
}

// TestOutputReplayWindow: the userapi keeps produced OutputClientData records for
// user_api.output_replay_window; once they are older, asking for them is 404 M_NOT_FOUND,
// which a reader's OutputSequence turns into eventlog.ReplayGoneError naming the number
// after the last record.
func TestOutputReplayWindow(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		log, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 1})
		if err != nil {
			t.Fatal(err)
		}
		ua, err := userapi.New(ctx, userapi.Deps{
			Cfg: &config.UserAPI{BCryptCost: 4, OutputReplayWindow: config.Duration(time.Nanosecond)}, ServerName: serverName, DB: db, Log: log, ClientDataTopic: topic,
		})
		if err != nil {
			t.Fatal(err)
		}
		u := ua.API()
		create(t, u, "alice", "password")
		for i := range 2 {
			if _, err := u.PerformAccountData(ctx, &api.PerformAccountDataRequest{UserID: "@alice:" + serverName, DataType: "x", Data: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))}); err != nil {
				t.Fatal(err)
			}
		}
		res, err := u.QueryOutputRecords(ctx, &api.QueryOutputRecordsRequest{Topic: api.TopicOutputClientData, AfterSeq: 1})
		if err != nil || len(res.Records) != 1 || res.LastSeq != 2 {
			t.Fatalf("before pruning: %+v, %v", res, err)
		}
		run, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- ua.Run(run) }()
		defer func() { stop(); <-done }()
		for {
			_, err = u.QueryOutputRecords(ctx, &api.QueryOutputRecordsRequest{Topic: api.TopicOutputClientData, AfterSeq: 1})
			if err != nil || ctx.Err() != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		wantCode(t, err, "M_NOT_FOUND")
		_, err = api.OutputSequence(u, api.TopicOutputClientData).Fetch(ctx, 0, 1)
		var gone *eventlog.ReplayGoneError
		if !errors.As(err, &gone) || gone.Oldest != 3 {
			t.Fatalf("Fetch past the window: %v", err)
		}
	})
}

// TestAccountErasure: deactivation with erase marks the account erased for good (a second
// deactivation without erase keeps the mark, a restart on the same database too); one
// without erase erases nothing; QueryErasedUsers answers only for this server's users.
func TestAccountErasure(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		ctx := context.Background()
		u := newAPI(t, db, nil)
		alice, bob, carol := create(t, u, "alice", "pw"), create(t, u, "bob", "pw"), create(t, u, "carol", "pw")
		erased := func(u api.ClientUserAPI) []string {
			t.Helper()
			res, err := u.QueryErasedUsers(ctx, &api.QueryErasedUsersRequest{
				UserIDs: []string{alice.UserID, bob.UserID, carol.UserID, "@alice:elsewhere", "alice"}})
			if err != nil {
				t.Fatal(err)
			}
			return res.Erased
		}
		if got := erased(u); len(got) != 0 {
			t.Fatalf("erased before any deactivation: %v", got)
		}
		for _, req := range []api.PerformAccountDeactivationRequest{
			{Localpart: "alice", Erase: true}, {Localpart: "bob"}, {Localpart: "alice"},
		} {
			if _, err := u.PerformAccountDeactivation(ctx, &req); err != nil {
				t.Fatalf("deactivate %+v: %v", req, err)
			}
		}
		_, err := u.PerformAccountDeactivation(ctx, &api.PerformAccountDeactivationRequest{Localpart: "nobody", Erase: true})
		wantCode(t, err, "M_NOT_FOUND")
		if got := erased(u); len(got) != 1 || got[0] != alice.UserID {
			t.Fatalf("erased %v, want only %s", got, alice.UserID)
		}
		if got := erased(newAPI(t, db, nil)); len(got) != 1 || got[0] != alice.UserID {
			t.Fatalf("erased after a restart %v, want only %s", got, alice.UserID)
		}
	})
}
