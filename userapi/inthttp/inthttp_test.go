package inthttp_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/eventlog"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	"github.com/matrix-org/dendrite/internal/matrixerr"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/userapi"
	"github.com/matrix-org/dendrite/userapi/api"
	"github.com/matrix-org/dendrite/userapi/inthttp"
)

const serverName = "test.local"

// env is a real userapi on one database, called directly and over loopback HTTP.
type env struct {
	direct api.ClientUserAPI
	remote *inthttp.Client
	url    string
}

func start(t *testing.T, db *sqlutil.DB) *env {
	t.Helper()
	ctx := context.Background()
	log, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 1})
	if err != nil {
		t.Fatal(err)
	}
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	ua, err := userapi.New(ctx, userapi.Deps{
		Cfg: &config.UserAPI{BCryptCost: 4}, ServerName: serverName, DB: db, Log: log, ClientDataTopic: "clientdata", KeyChangeTopic: "keychanges",
		Logger: logrus.NewEntry(logger),
	})
	if err != nil {
		t.Fatal(err)
	}
	router := mux.NewRouter()
	inthttp.Register(router, ua.API(), ihttp.ServerOptions{Logger: logrus.NewEntry(logger)})
	hs := httptest.NewServer(router)
	t.Cleanup(func() {
		hs.Close()
		if err := log.Close(); err != nil {
			t.Error(err)
		}
	})
	return &env{direct: ua.API(), remote: inthttp.NewClient(hs.URL, ihttp.ClientOptions{}), url: hs.URL}
}

// checker records which methods the test called over HTTP.
type checker struct {
	t    *testing.T
	seen map[string]bool
}

func (c *checker) mark(method string) {
	c.seen[method] = true
}

func methodOf[Req any](t *testing.T) string {
	t.Helper()
	m, err := ihttp.MethodName[Req]()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// same calls a side-effect-free method (or one failing without effect) directly and over
// HTTP and fails unless answers and errors are equal, Matrix errors with their status.
func same[Res, Req any](c *checker, name string, direct, remote func(context.Context, *Req) (*Res, error), req *Req) *Res {
	c.t.Helper()
	method := methodOf[Req](c.t)
	c.mark(method)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dres, derr := direct(ctx, req)
	rres, rerr := remote(ctx, req)
	sameErr(c.t, method+" "+name, derr, rerr)
	if derr != nil {
		return nil
	}
	dj, _ := json.Marshal(dres) // responses are plain data
	rj, _ := json.Marshal(rres)
	if string(dj) != string(rj) {
		c.t.Fatalf("%s %s: answers differ\ndirect: %s\nremote: %s", method, name, dj, rj)
	}
	return rres
}

func sameErr(t *testing.T, what string, derr, rerr error) {
	t.Helper()
	if (derr == nil) != (rerr == nil) {
		t.Fatalf("%s: direct error %v, remote error %v", what, derr, rerr)
	}
	if derr == nil {
		return
	}
	var dm, rm *matrixerr.Error
	if !errors.As(derr, &dm) {
		t.Fatalf("%s: direct error is not a Matrix error: %v", what, derr)
	}
	if !errors.As(rerr, &rm) || *dm != *rm {
		t.Fatalf("%s: direct error %#v, remote error %#v", what, dm, rerr)
	}
}

// over calls a method with side effects over HTTP only.
func over[Res, Req any](c *checker, remote func(context.Context, *Req) (*Res, error), req *Req) (*Res, error) {
	c.t.Helper()
	c.mark(methodOf[Req](c.t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return remote(ctx, req)
}

// ok is over for a call that must succeed.
func ok[Res, Req any](c *checker, remote func(context.Context, *Req) (*Res, error), req *Req) *Res {
	c.t.Helper()
	res, err := over(c, remote, req)
	if err != nil {
		c.t.Fatalf("%s: %v", methodOf[Req](c.t), err)
	}
	return res
}

func TestEveryMethodOverHTTP(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		e := start(t, db)
		c := &checker{t: t, seen: map[string]bool{}}
		everyMethod(t, e, c)
		want, err := ihttp.Methods(reflect.TypeFor[api.ClientUserAPI]())
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range want {
			if !c.seen[m] {
				t.Errorf("api.ClientUserAPI.%s is not round-tripped by this test", m)
			}
		}
	})
}

func everyMethod(t *testing.T, e *env, c *checker) {
	d, r := e.direct, e.remote
	alice := "@alice:" + serverName

	acc := ok(c, r.PerformAccountCreation, &api.PerformAccountCreationRequest{Localpart: "alice", Password: "pw", AccountType: api.AccountTypeUser})
	if acc.Account.UserID != alice || acc.Account.AccountType != api.AccountTypeUser {
		t.Fatalf("account %+v", acc.Account)
	}
	same(c, "taken", d.PerformAccountCreation, r.PerformAccountCreation, &api.PerformAccountCreationRequest{Localpart: "alice", Password: "x"})
	same(c, "invalid", d.PerformAccountCreation, r.PerformAccountCreation, &api.PerformAccountCreationRequest{Localpart: "Not Valid", Password: "x"})

	same(c, "taken", d.QueryLocalpartAvailable, r.QueryLocalpartAvailable, &api.QueryLocalpartAvailableRequest{Localpart: "alice"})
	same(c, "free", d.QueryLocalpartAvailable, r.QueryLocalpartAvailable, &api.QueryLocalpartAvailableRequest{Localpart: "bob"})
	same(c, "invalid", d.QueryLocalpartAvailable, r.QueryLocalpartAvailable, &api.QueryLocalpartAvailableRequest{Localpart: "é"})

	guest := ok(c, r.PerformAccountCreation, &api.PerformAccountCreationRequest{Localpart: "guest", AccountType: api.AccountTypeGuest})
	if g := same(c, "guest", d.QueryAccount, r.QueryAccount, &api.QueryAccountRequest{Localpart: "guest"}); g.Account.AccountType != api.AccountTypeGuest {
		t.Fatalf("guest account %+v", g.Account)
	}
	same(c, "unknown", d.QueryAccount, r.QueryAccount, &api.QueryAccountRequest{Localpart: "nobody"})
	same(c, "not a guest", d.PerformGuestUpgrade, r.PerformGuestUpgrade, &api.PerformGuestUpgradeRequest{Localpart: "alice", Password: "x"})
	if up := ok(c, r.PerformGuestUpgrade, &api.PerformGuestUpgradeRequest{Localpart: "guest", Password: "pw"}); up.Account.UserID != guest.Account.UserID || up.Account.AccountType != api.AccountTypeUser {
		t.Fatalf("upgraded %+v", up.Account)
	}
	same(c, "upgraded", d.PerformGuestUpgrade, r.PerformGuestUpgrade, &api.PerformGuestUpgradeRequest{Localpart: "guest", Password: "x"})
	same(c, "none erased", d.QueryErasedUsers, r.QueryErasedUsers, &api.QueryErasedUsersRequest{UserIDs: []string{guest.Account.UserID, alice}})
	ok(c, r.PerformAccountDeactivation, &api.PerformAccountDeactivationRequest{Localpart: "guest", Erase: true})
	same(c, "again", d.PerformAccountDeactivation, r.PerformAccountDeactivation, &api.PerformAccountDeactivationRequest{Localpart: "guest"})
	erased := same(c, "erased", d.QueryErasedUsers, r.QueryErasedUsers, &api.QueryErasedUsersRequest{
		UserIDs: []string{alice, guest.Account.UserID, "@guest:elsewhere", "not an ID"}})
	if !slices.Equal(erased.Erased, []string{guest.Account.UserID}) {
		t.Fatalf("erased %v", erased.Erased)
	}
	same(c, "unknown", d.PerformAccountDeactivation, r.PerformAccountDeactivation, &api.PerformAccountDeactivationRequest{Localpart: "nobody"})
	same(c, "deactivated", d.QueryAccountByPassword, r.QueryAccountByPassword, &api.QueryAccountByPasswordRequest{Localpart: "guest", Password: "pw"})

	same(c, "good", d.QueryAccountByPassword, r.QueryAccountByPassword, &api.QueryAccountByPasswordRequest{Localpart: "alice", Password: "pw"})
	same(c, "wrong", d.QueryAccountByPassword, r.QueryAccountByPassword, &api.QueryAccountByPasswordRequest{Localpart: "alice", Password: "no"})

	name, devID := "phone", "PHONE"
	dev := ok(c, r.PerformDeviceCreation, &api.PerformDeviceCreationRequest{Localpart: "alice", DeviceID: &devID, DisplayName: &name, IP: "127.0.0.1"})
	if dev.Device.DeviceID != devID || !strings.HasPrefix(dev.AccessToken, "syt_") {
		t.Fatalf("device %+v token %q", dev.Device, dev.AccessToken)
	}
	other := ok(c, r.PerformDeviceCreation, &api.PerformDeviceCreationRequest{Localpart: "alice"})
	same(c, "unknown user", d.PerformDeviceCreation, r.PerformDeviceCreation, &api.PerformDeviceCreationRequest{Localpart: "nobody"})

	q := same(c, "known", d.QueryAccessToken, r.QueryAccessToken, &api.QueryAccessTokenRequest{AccessToken: dev.AccessToken})
	if q.Device == nil || q.Device.DeviceID != devID {
		t.Fatalf("token lookup %+v", q.Device)
	}
	same(c, "unknown", d.QueryAccessToken, r.QueryAccessToken, &api.QueryAccessTokenRequest{AccessToken: "syt_unknown"})

	laptop := "laptop"
	ok(c, r.PerformDeviceUpdate, &api.PerformDeviceUpdateRequest{UserID: alice, DeviceID: devID, DisplayName: &laptop})
	same(c, "unknown device", d.PerformDeviceUpdate, r.PerformDeviceUpdate, &api.PerformDeviceUpdateRequest{UserID: alice, DeviceID: "NOPE", DisplayName: &laptop})
	devs := same(c, "two", d.QueryDevices, r.QueryDevices, &api.QueryDevicesRequest{UserID: alice})
	if len(devs.Devices) != 2 {
		t.Fatalf("devices %+v", devs.Devices)
	}
	ok(c, r.PerformDeviceDeletion, &api.PerformDeviceDeletionRequest{UserID: alice, DeviceIDs: []string{other.Device.DeviceID}})
	// Idempotent: deleting again changes nothing and succeeds both ways.
	same(c, "again", d.PerformDeviceDeletion, r.PerformDeviceDeletion, &api.PerformDeviceDeletionRequest{UserID: alice, DeviceIDs: []string{other.Device.DeviceID}})
	devs = same(c, "one", d.QueryDevices, r.QueryDevices, &api.QueryDevicesRequest{UserID: alice})
	if len(devs.Devices) != 1 || devs.Devices[0].DisplayName != laptop {
		t.Fatalf("devices after deletion %+v", devs.Devices)
	}
	same(c, "none", d.QueryDevices, r.QueryDevices, &api.QueryDevicesRequest{UserID: "@nobody:" + serverName})

	// A new password that keeps the devices, then one that logs out all but the phone.
	extra := ok(c, r.PerformDeviceCreation, &api.PerformDeviceCreationRequest{Localpart: "alice"})
	ok(c, r.PerformPasswordUpdate, &api.PerformPasswordUpdateRequest{Localpart: "alice", Password: "pw2", KeepDevices: true})
	same(c, "old password", d.QueryAccountByPassword, r.QueryAccountByPassword, &api.QueryAccountByPasswordRequest{Localpart: "alice", Password: "pw"})
	if devs = same(c, "kept", d.QueryDevices, r.QueryDevices, &api.QueryDevicesRequest{UserID: alice}); len(devs.Devices) != 2 {
		t.Fatalf("devices after a password change keeping them %+v", devs.Devices)
	}
	ok(c, r.PerformPasswordUpdate, &api.PerformPasswordUpdateRequest{Localpart: "alice", Password: "pw", ExceptDeviceID: devID})
	if devs = same(c, "logged out", d.QueryDevices, r.QueryDevices, &api.QueryDevicesRequest{UserID: alice}); len(devs.Devices) != 1 || devs.Devices[0].DeviceID != devID {
		t.Fatalf("devices after a password change logging out all but %s: %+v (%s gone)", devID, devs.Devices, extra.Device.DeviceID)
	}
	same(c, "unknown account", d.PerformPasswordUpdate, r.PerformPasswordUpdate, &api.PerformPasswordUpdateRequest{Localpart: "nobody", Password: "x"})

	same(c, "initial", d.QueryProfile, r.QueryProfile, &api.QueryProfileRequest{UserID: alice})
	same(c, "unknown", d.QueryProfile, r.QueryProfile, &api.QueryProfileRequest{UserID: "@bob:" + serverName})
	if set := ok(c, r.PerformSetDisplayName, &api.PerformSetDisplayNameRequest{Localpart: "alice", DisplayName: "Alice"}); !set.Changed {
		t.Fatal("display name not changed")
	}
	same(c, "unchanged", d.PerformSetDisplayName, r.PerformSetDisplayName, &api.PerformSetDisplayNameRequest{Localpart: "alice", DisplayName: "Alice"})
	same(c, "unknown", d.PerformSetDisplayName, r.PerformSetDisplayName, &api.PerformSetDisplayNameRequest{Localpart: "bob", DisplayName: "Bob"})
	if set := ok(c, r.PerformSetAvatarURL, &api.PerformSetAvatarURLRequest{Localpart: "alice", AvatarURL: "mxc://a/b"}); !set.Changed {
		t.Fatal("avatar not changed")
	}
	same(c, "unknown", d.PerformSetAvatarURL, r.PerformSetAvatarURL, &api.PerformSetAvatarURLRequest{Localpart: "bob", AvatarURL: "mxc://a/b"})
	p := same(c, "set", d.QueryProfile, r.QueryProfile, &api.QueryProfileRequest{UserID: alice})
	if p.DisplayName != "Alice" || p.AvatarURL != "mxc://a/b" {
		t.Fatalf("profile %+v", p)
	}

	ok(c, r.PerformAccountData, &api.PerformAccountDataRequest{UserID: alice, DataType: "m.direct", Data: json.RawMessage(`{"a":1}`)})
	ok(c, r.PerformAccountData, &api.PerformAccountDataRequest{UserID: alice, RoomID: "!r:x", DataType: "m.tag", Data: json.RawMessage(`{"tags":{}}`)})
	same(c, "not an object", d.PerformAccountData, r.PerformAccountData, &api.PerformAccountDataRequest{UserID: alice, DataType: "x", Data: json.RawMessage(`[1]`)})
	ok(c, r.PerformRoomTag, &api.PerformRoomTagRequest{UserID: alice, RoomID: "!t:x", Tag: "u.work", Content: json.RawMessage(`{"order":0.5}`)})
	same(c, "tag not an object", d.PerformRoomTag, r.PerformRoomTag, &api.PerformRoomTagRequest{UserID: alice, RoomID: "!r:x", Tag: "u.x", Content: json.RawMessage(`[1]`)})
	// The three changes above, numbered 1 to 3 in the one partition, each with its content.
	recs := same(c, "client data", d.QueryOutputRecords, r.QueryOutputRecords, &api.QueryOutputRecordsRequest{Topic: api.TopicOutputClientData})
	if len(recs.Records) != 3 || recs.LastSeq != 3 {
		t.Fatalf("QueryOutputRecords: %d records, last %d; want 3, 3", len(recs.Records), recs.LastSeq)
	}
	for i, raw := range recs.Records {
		var o api.OutputClientData
		if err := json.Unmarshal(raw, &o); err != nil || o.Seq != int64(i+1) || o.AccountData == nil || o.AccountData.UserID != alice {
			t.Fatalf("record %d: %s", i, raw)
		}
	}
	if after := same(c, "after 2", d.QueryOutputRecords, r.QueryOutputRecords, &api.QueryOutputRecordsRequest{Topic: api.TopicOutputClientData, AfterSeq: 2}); len(after.Records) != 1 {
		t.Fatalf("QueryOutputRecords after 2: %d records", len(after.Records))
	}
	same(c, "unknown topic", d.QueryOutputRecords, r.QueryOutputRecords, &api.QueryOutputRecordsRequest{Topic: "OutputRoomEvent"})
	all := same(c, "all", d.QueryAccountData, r.QueryAccountData, &api.QueryAccountDataRequest{UserID: alice})
	if string(all.Global["m.direct"]) != `{"a":1}` || string(all.Rooms["!r:x"]["m.tag"]) != `{"tags":{}}` {
		t.Fatalf("account data %+v", all)
	}
	same(c, "one room type", d.QueryAccountData, r.QueryAccountData, &api.QueryAccountDataRequest{UserID: alice, RoomID: "!r:x", DataType: "m.tag"})
	same(c, "missing type", d.QueryAccountData, r.QueryAccountData, &api.QueryAccountDataRequest{UserID: alice, DataType: "m.nothing"})

	f := ok(c, r.PerformPutFilter, &api.PerformPutFilterRequest{Localpart: "alice", Filter: json.RawMessage(`{"room":{}}`)})
	// Idempotent: the same filter gets the same ID.
	same(c, "again", d.PerformPutFilter, r.PerformPutFilter, &api.PerformPutFilterRequest{Localpart: "alice", Filter: json.RawMessage(`{"room":{}}`)})
	got := same(c, "known", d.QueryFilter, r.QueryFilter, &api.QueryFilterRequest{Localpart: "alice", FilterID: f.FilterID})
	if string(got.Filter) != `{"room":{}}` {
		t.Fatalf("filter %s", got.Filter)
	}
	same(c, "unknown", d.QueryFilter, r.QueryFilter, &api.QueryFilterRequest{Localpart: "alice", FilterID: "999"})

	keys := test.NewDeviceKeys(t, alice, devID)
	up := ok(c, r.PerformUploadKeys, &api.PerformUploadKeysRequest{UserID: alice, DeviceID: devID, DeviceKeys: keys.JSON(t),
		OneTimeKeys:  map[string]json.RawMessage{"signed_curve25519:A": keys.OneTimeKey(t, false)},
		FallbackKeys: map[string]json.RawMessage{"signed_curve25519:F": keys.OneTimeKey(t, true)}})
	if up.OneTimeKeyCounts["signed_curve25519"] != 1 {
		t.Fatalf("upload counts %+v", up.OneTimeKeyCounts)
	}
	same(c, "unsigned", d.PerformUploadKeys, r.PerformUploadKeys, &api.PerformUploadKeysRequest{UserID: alice, DeviceID: devID,
		DeviceKeys: json.RawMessage(`{"user_id":"` + alice + `","device_id":"` + devID + `"}`)})
	qk := same(c, "local and remote", d.QueryKeys, r.QueryKeys, &api.QueryKeysRequest{DeviceKeys: map[string][]string{alice: nil, "@x:elsewhere": nil}})
	if len(qk.DeviceKeys[alice]) != 1 || len(qk.Failures) != 1 {
		t.Fatalf("queried keys %+v", qk)
	}
	// No fetcher: a remote user with nothing cached is a failure for their server.
	rk := same(c, "nothing cached", d.QueryRemoteKeys, r.QueryRemoteKeys, &api.QueryRemoteKeysRequest{DeviceKeys: map[string][]string{"@x:elsewhere": nil}})
	if len(rk.DeviceKeys) != 0 || rk.Failures["elsewhere"] == nil {
		t.Fatalf("remote keys %+v", rk)
	}
	counts := same(c, "one key", d.QueryOneTimeKeyCounts, r.QueryOneTimeKeyCounts, &api.QueryOneTimeKeyCountsRequest{UserID: alice, DeviceID: devID})
	if counts.OneTimeKeyCounts["signed_curve25519"] != 1 || len(counts.UnusedFallbackKeyAlgorithms) != 1 {
		t.Fatalf("counts %+v", counts)
	}
	same(c, "mark stale", d.PerformMarkRemoteDeviceListsStale, r.PerformMarkRemoteDeviceListsStale,
		&api.PerformMarkRemoteDeviceListsStaleRequest{UserIDs: []string{"@x:elsewhere", alice}})
	claim := func() string {
		res := ok(c, r.PerformClaimKeys, &api.PerformClaimKeysRequest{OneTimeKeys: map[string]map[string]string{alice: {devID: "signed_curve25519"}}})
		for id := range res.OneTimeKeys[alice][devID] {
			return id
		}
		return ""
	}
	if first, second := claim(), claim(); first != "signed_curve25519:A" || second != "signed_curve25519:F" {
		t.Fatalf("claimed %q then %q", first, second)
	}

	master, self := test.NewCrossSigningKey(t, alice, "master"), test.NewCrossSigningKey(t, alice, "self_signing")
	ok(c, r.PerformUploadDeviceSigningKeys, &api.PerformUploadDeviceSigningKeysRequest{UserID: alice, MasterKey: master.JSON(t, nil), SelfSigningKey: self.JSON(t, master)})
	same(c, "replacement without authentication", d.PerformUploadDeviceSigningKeys, r.PerformUploadDeviceSigningKeys,
		&api.PerformUploadDeviceSigningKeysRequest{UserID: alice, MasterKey: self.JSON(t, nil)})
	var devKeys map[string]json.RawMessage
	if err := json.Unmarshal(qk.DeviceKeys[alice][devID], &devKeys); err != nil {
		t.Fatal(err)
	}
	delete(devKeys, "signatures")
	delete(devKeys, "unsigned")
	plain, _ := json.Marshal(devKeys) // plain data
	sig := ok(c, r.PerformUploadSignatures, &api.PerformUploadSignaturesRequest{UserID: alice,
		Signatures: map[string]map[string]json.RawMessage{alice: {devID: self.Sign(t, plain)}}})
	if len(sig.Failures) != 0 {
		t.Fatalf("signature failures %+v", sig.Failures)
	}
	dl := same(c, "alice", d.QueryDeviceList, r.QueryDeviceList, &api.QueryDeviceListRequest{UserID: alice})
	if dl.StreamID < 2 || len(dl.Devices) != 1 || dl.Devices[0].Keys == nil || dl.MasterKey == nil || dl.SelfSigningKey == nil {
		t.Fatalf("device list %+v", dl)
	}
	same(c, "remote", d.QueryDeviceList, r.QueryDeviceList, &api.QueryDeviceListRequest{UserID: "@x:elsewhere"})
	same(c, "no backup", d.QueryKeyBackupVersion, r.QueryKeyBackupVersion, &api.QueryKeyBackupVersionRequest{UserID: alice})
	bv := ok(c, r.PerformKeyBackupVersion, &api.PerformKeyBackupVersionRequest{UserID: alice, Algorithm: "m.megolm_backup.v1.curve25519-aes-sha2", AuthData: json.RawMessage(`{}`)})
	session := api.KeyBackupSession{FirstMessageIndex: 3, SessionData: json.RawMessage(`{"a":1}`)}
	if rk := ok(c, r.PerformRoomKeys, &api.PerformRoomKeysRequest{UserID: alice, Version: bv.Version,
		Keys: map[string]map[string]api.KeyBackupSession{"!r:x": {"s": session}}}); rk.Count != 1 {
		t.Fatalf("room keys %+v", rk)
	}
	same(c, "old version", d.PerformRoomKeys, r.PerformRoomKeys, &api.PerformRoomKeysRequest{UserID: alice, Version: "999",
		Keys: map[string]map[string]api.KeyBackupSession{"!r:x": {"s": session}}})
	if v := same(c, "latest", d.QueryKeyBackupVersion, r.QueryKeyBackupVersion, &api.QueryKeyBackupVersionRequest{UserID: alice}); v.Count != 1 {
		t.Fatalf("backup version %+v", v)
	}
	if got := same(c, "all", d.QueryRoomKeys, r.QueryRoomKeys, &api.QueryRoomKeysRequest{UserID: alice, Version: bv.Version}); len(got.Rooms["!r:x"]) != 1 {
		t.Fatalf("room keys %+v", got)
	}
	if qk = same(c, "cross-signed", d.QueryKeys, r.QueryKeys, &api.QueryKeysRequest{UserID: alice, DeviceKeys: map[string][]string{alice: nil}}); qk.MasterKeys[alice] == nil {
		t.Fatalf("no master key in %+v", qk)
	}
}

// TestMatrixErrorsOnTheWire checks that typed errors answer with their own HTTP status on the
// wire, and come back as the same *matrixerr.Error to the caller.
func TestMatrixErrorsOnTheWire(t *testing.T) {
	e := start(t, sqliteDB(t))
	ctx := context.Background()
	if _, err := e.remote.PerformAccountCreation(ctx, &api.PerformAccountCreationRequest{Localpart: "alice", Password: "pw"}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, body, code string
		status             int
	}{
		{"PerformAccountCreation", `{"localpart":"alice","password":"x"}`, "M_USER_IN_USE", http.StatusBadRequest},
		{"QueryAccountByPassword", `{"localpart":"alice","password":"wrong"}`, "M_FORBIDDEN", http.StatusForbidden},
		{"QueryProfile", `{"user_id":"@bob:test.local"}`, "M_NOT_FOUND", http.StatusNotFound},
	} {
		t.Run(tc.code, func(t *testing.T) {
			res, err := http.Post(e.url+ihttp.Path(inthttp.Component, tc.method), "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			var body struct {
				Code string `json:"errcode"`
			}
			err = json.NewDecoder(res.Body).Decode(&body)
			_ = res.Body.Close() // read-only body
			if err != nil || res.StatusCode != tc.status || body.Code != tc.code || res.Header.Get(ihttp.HeaderError) != ihttp.ErrorMatrix {
				t.Fatalf("HTTP %d %+v (%v), want %d %s", res.StatusCode, body, err, tc.status, tc.code)
			}
		})
	}
	_, err := e.remote.QueryProfile(ctx, &api.QueryProfileRequest{UserID: "@bob:" + serverName})
	var merr *matrixerr.Error
	if !errors.As(err, &merr) || merr.Code != "M_NOT_FOUND" || merr.Status != http.StatusNotFound {
		t.Fatalf("caller got %#v", err)
	}
}

func sqliteDB(t *testing.T) *sqlutil.DB {
	t.Helper()
	db, err := sqlutil.Open("file:" + t.TempDir() + "/test.db")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() }) // nothing to do about a failed close in cleanup
	return db
}

// TestEveryMethodServed fails when a method is added to api.ClientUserAPI and not to Register.
func TestEveryMethodServed(t *testing.T) {
	srv := inthttp.Register(mux.NewRouter(), (*inthttp.Client)(nil), ihttp.ServerOptions{})
	want, err := ihttp.Methods(reflect.TypeFor[api.ClientUserAPI]())
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Methods(); !slices.Equal(got, want) {
		t.Fatalf("served %v, api.ClientUserAPI has %v", got, want)
	}
}
