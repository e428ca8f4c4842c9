package inthttp_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/mux"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
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

const (
	serverName = "test.local"
	inTopic    = "in"
)

// env is a real roomserver shard on the embedded log, served over loopback HTTP.
type env struct {
	log    eventlog.Log
	direct api.ServerAPI
	remote *inthttp.Client
	server *ihttp.Server
	// input writes through the log and waits over HTTP, as a polylith writer does.
	input *api.Input
	key   ed25519.PrivateKey
}

func start(t *testing.T, db *sqlutil.DB) *env {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log, err := eventlog.NewEmbedded(ctx, db, eventlog.Config{DefaultPartitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := roomserver.New(ctx, roomserver.Deps{
		Cfg: &config.RoomServer{Shards: 1}, ServerName: serverName, KeyID: "ed25519:test", PrivateKey: key,
		DB: db, Log: log, InputTopic: inTopic, OutputTopic: "out", Logger: logrus.NewEntry(logger),
	})
	if err != nil {
		t.Fatal(err)
	}
	router := mux.NewRouter()
	srv := inthttp.Register(router, rs.API(), ihttp.ServerOptions{Logger: logrus.NewEntry(logger)})
	hs := httptest.NewServer(router)
	remote := inthttp.NewClient(hs.URL, ihttp.ClientOptions{})
	done := make(chan error, 1)
	go func() { done <- rs.Run(ctx) }()
	t.Cleanup(func() {
		hs.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("roomserver run: %v", err)
		}
		if err := log.Close(); err != nil {
			t.Error(err)
		}
	})
	return &env{log: log, direct: rs.API(), remote: remote, server: srv, key: key,
		input: &api.Input{Log: log, Topic: inTopic, Wait: remote}}
}

// submit goes through api.Input, so its wait (QueryInputResult) crosses HTTP.
func (e *env) submit(t *testing.T, in api.InputRoomEvents) []api.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := e.input.InputRoomEvents(ctx, &api.InputRoomEventsRequest{Input: in})
	if err != nil {
		t.Fatalf("input: %v", err)
	}
	return res.Results
}

// produce appends a message without waiting, to compare the two waits at its position.
func (e *env) produce(t *testing.T, in api.InputRoomEvents) *api.QueryInputResultRequest {
	t.Helper()
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	pos, err := e.log.Produce(context.Background(), inTopic, eventlog.Message{Key: []byte(in.RoomID), Value: b})
	if err != nil {
		t.Fatal(err)
	}
	return &api.QueryInputResultRequest{Partition: pos[0].Partition, Offset: pos[0].Offset}
}

// checker compares each method's direct and HTTP answers and records which methods it saw.
type checker struct {
	t    *testing.T
	seen map[string]bool
}

// same calls the method both ways and fails unless answers and errors are equal.
func same[Res, Req any](c *checker, name string, direct, remote func(context.Context, *Req) (*Res, error), req *Req) *Res {
	c.t.Helper()
	method, err := ihttp.MethodName[Req]()
	if err != nil {
		c.t.Fatal(err)
	}
	c.seen[method] = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dres, derr := direct(ctx, req)
	rres, rerr := remote(ctx, req)
	if (derr == nil) != (rerr == nil) {
		c.t.Fatalf("%s %s: direct error %v, remote error %v", method, name, derr, rerr)
	}
	if derr != nil {
		var dm, rm *matrixerr.Error
		if errors.As(derr, &dm) && (!errors.As(rerr, &rm) || *dm != *rm) {
			c.t.Fatalf("%s %s: direct error %#v, remote error %#v", method, name, derr, rerr)
		}
		return nil
	}
	if why := diff(reflect.ValueOf(dres), reflect.ValueOf(rres), method); why != "" {
		dj, _ := json.Marshal(dres) // for the failure message only
		rj, _ := json.Marshal(rres)
		c.t.Fatalf("%s %s: %s\ndirect: %s\nremote: %s", method, name, why, dj, rj)
	}
	return rres
}

var eventType = reflect.TypeFor[api.Event]()

// diff compares deeply, events by what they are (ID, version, redaction, JSON), and nil and
// empty slices as equal (JSON cannot tell them apart). It returns "" when a and b are equal.
func diff(a, b reflect.Value, path string) string {
	if a.Type() == eventType {
		ea, eb := a.Interface().(api.Event), b.Interface().(api.Event)
		if (ea.PDU == nil) != (eb.PDU == nil) {
			return path + ": one event is nil"
		}
		if ea.PDU != nil && (ea.EventID() != eb.EventID() || ea.Version() != eb.Version() ||
			ea.Redacted() != eb.Redacted() || string(ea.JSON()) != string(eb.JSON())) {
			return path + ": events differ"
		}
		return ""
	}
	switch a.Kind() {
	case reflect.Pointer, reflect.Interface:
		if a.IsNil() || b.IsNil() {
			if a.IsNil() != b.IsNil() {
				return path + ": one is nil"
			}
			return ""
		}
		return diff(a.Elem(), b.Elem(), path)
	case reflect.Struct:
		for i := range a.NumField() {
			if why := diff(a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name); why != "" {
				return why
			}
		}
		return ""
	case reflect.Slice:
		if a.Len() != b.Len() {
			return fmt.Sprintf("%s: length %d != %d", path, a.Len(), b.Len())
		}
		for i := range a.Len() {
			if why := diff(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", path, i)); why != "" {
				return why
			}
		}
		return ""
	case reflect.Map:
		if a.Len() != b.Len() {
			return path + ": map sizes differ"
		}
		for _, k := range a.MapKeys() {
			if !b.MapIndex(k).IsValid() {
				return fmt.Sprintf("%s[%v]: missing", path, k)
			}
			if why := diff(a.MapIndex(k), b.MapIndex(k), fmt.Sprintf("%s[%v]", path, k)); why != "" {
				return why
			}
		}
		return ""
	default:
		if !a.Equal(b) {
			return fmt.Sprintf("%s: %v != %v", path, a, b)
		}
		return ""
	}
}

func TestEveryMethodOverHTTP(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		for _, version := range []gomatrixserverlib.RoomVersion{gomatrixserverlib.RoomVersionV10, gomatrixserverlib.RoomVersionV12} {
			t.Run("v"+string(version), func(t *testing.T) {
				e := start(t, db)
				c := &checker{t: t, seen: map[string]bool{}}
				everyMethod(t, e, c, version)
				want, err := ihttp.Methods(reflect.TypeFor[api.ServerAPI]())
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range want {
					if !c.seen[m] {
						t.Errorf("api.ServerAPI.%s is not round-tripped by this test", m)
					}
				}
			})
		}
	})
}

func everyMethod(t *testing.T, e *env, c *checker, version gomatrixserverlib.RoomVersion) {
	alice, bob := "@alice:"+serverName, "@bob:"+serverName
	roomID := ""
	if version != gomatrixserverlib.RoomVersionV12 {
		roomID = fmt.Sprintf("!r%d:%s", time.Now().UnixNano(), serverName)
	}
	create := roomtest.CreateEvent(t, e.key, serverName, version, alice, roomID)
	roomID = create.RoomID().String()
	pl := map[string]any{}
	if !gomatrixserverlib.MustGetRoomVersion(version).PrivilegedCreators() {
		pl["users"] = map[string]int{alice: 100}
	}
	res := e.submit(t, api.InputRoomEvents{RoomID: roomID, RoomVersion: string(version), Atomic: true, Events: []api.InputRoomEvent{
		{Kind: api.KindNew, Event: &api.Event{PDU: create}},
		roomtest.Proto(alice, spec.MRoomMember, roomtest.StateKey(alice), map[string]string{"membership": "join"}),
		roomtest.Proto(alice, spec.MRoomPowerLevels, roomtest.StateKey(""), pl),
		roomtest.Proto(alice, spec.MRoomJoinRules, roomtest.StateKey(""), map[string]string{"join_rule": "invite"}),
	}})
	for i, r := range res {
		if r.Err != nil {
			t.Fatalf("create event %d rejected: %v", i, r.Err)
		}
	}
	// A rejection reached over HTTP keeps its status: clientapi answers the user with it.
	res = e.submit(t, api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(bob, spec.MRoomMember, roomtest.StateKey(bob), map[string]string{"membership": "join"})}})
	if res[0].Err == nil || res[0].Err.Code != "M_FORBIDDEN" || res[0].Err.Status != 403 {
		t.Fatalf("bob joined an invite-only room, or the rejection lost its status: %+v", res[0].Err)
	}
	res = e.submit(t, api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(alice, spec.MRoomName, roomtest.StateKey(""), map[string]string{"name": "one"})}})
	nameID := res[0].EventID
	accepted := e.produce(t, api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(alice, "m.room.message", nil, map[string]string{"body": "hi"})}})
	rejected := e.produce(t, api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{roomtest.Proto(bob, "m.room.message", nil, map[string]string{"body": "hi"})}})

	d, r := e.direct, e.remote
	// QueryInputResult first: it also waits for both messages to be applied.
	msg := same(c, "accepted", d.QueryInputResult, r.QueryInputResult, accepted)
	same(c, "rejected", d.QueryInputResult, r.QueryInputResult, rejected)
	same(c, "unserved partition", d.QueryInputResult, r.QueryInputResult, &api.QueryInputResultRequest{Partition: 99, Offset: 0})
	msgID := msg.Results[0].EventID

	// The room's outputs are kept after they were produced, numbered densely in their
	// partition (the output topic has the input topic's partitions).
	outs := same(c, "from the start", d.QueryOutputRecords, r.QueryOutputRecords, &api.QueryOutputRecordsRequest{Partition: accepted.Partition})
	if len(outs.Records) < 6 || outs.LastSeq != int64(len(outs.Records)) {
		t.Fatalf("output records: %d, last %d; want at least the room's 6 events, numbered 1..n", len(outs.Records), outs.LastSeq)
	}
	for i, raw := range outs.Records {
		var o api.OutputRoomEvent
		if err := json.Unmarshal(raw, &o); err != nil || o.Seq != int64(i+1) {
			t.Fatalf("output record %d: seq %d (%v), want %d", i, o.Seq, err, i+1)
		}
	}
	page := same(c, "a page", d.QueryOutputRecords, r.QueryOutputRecords, &api.QueryOutputRecordsRequest{Partition: accepted.Partition, AfterSeq: 2, Limit: 2})
	if len(page.Records) != 2 || !bytes.Equal(page.Records[0], outs.Records[2]) {
		t.Fatalf("page after 2: %d records", len(page.Records))
	}

	same(c, "room", d.QueryRoomInfo, r.QueryRoomInfo, &api.QueryRoomInfoRequest{RoomID: roomID})
	same(c, "unknown room", d.QueryRoomInfo, r.QueryRoomInfo, &api.QueryRoomInfoRequest{RoomID: "!nope:" + serverName})

	all := same(c, "all", d.QueryCurrentState, r.QueryCurrentState, &api.QueryCurrentStateRequest{RoomID: roomID})
	if len(all.StateEvents) != 5 {
		t.Fatalf("want 5 state events, got %d", len(all.StateEvents))
	}
	same(c, "tuples", d.QueryCurrentState, r.QueryCurrentState, &api.QueryCurrentStateRequest{RoomID: roomID, Tuples: []api.StateKeyTuple{
		{EventType: spec.MRoomName}, {EventType: spec.MRoomMember, StateKey: alice}, {EventType: spec.MRoomMember, StateKey: bob},
	}})
	same(c, "unknown room", d.QueryCurrentState, r.QueryCurrentState, &api.QueryCurrentStateRequest{RoomID: "!nope:" + serverName})

	m := same(c, "alice", d.QueryMembershipForUser, r.QueryMembershipForUser, &api.QueryMembershipForUserRequest{RoomID: roomID, UserID: alice})
	if m.Membership != spec.Join {
		t.Fatalf("alice: %+v", m)
	}
	same(c, "bob", d.QueryMembershipForUser, r.QueryMembershipForUser, &api.QueryMembershipForUserRequest{RoomID: roomID, UserID: bob})
	same(c, "unknown room", d.QueryMembershipForUser, r.QueryMembershipForUser, &api.QueryMembershipForUserRequest{RoomID: "!nope:" + serverName, UserID: alice})

	rooms := same(c, "alice", d.QueryRoomsForUser, r.QueryRoomsForUser, &api.QueryRoomsForUserRequest{UserID: alice, Membership: spec.Join})
	if !slices.Contains(rooms.RoomIDs, roomID) {
		t.Fatalf("rooms for alice: %v", rooms.RoomIDs)
	}
	same(c, "bob", d.QueryRoomsForUser, r.QueryRoomsForUser, &api.QueryRoomsForUserRequest{UserID: bob, Membership: spec.Join})

	ids := []string{msgID, "$unknown"} // the name event is among the state events
	for _, ev := range all.StateEvents {
		ids = append(ids, ev.EventID())
	}
	evs := same(c, "known and unknown", d.QueryEventsByID, r.QueryEventsByID, &api.QueryEventsByIDRequest{RoomID: roomID, EventIDs: ids})
	if len(evs.Events) != 6 {
		t.Fatalf("want 6 events, got %d", len(evs.Events))
	}
	same(c, "none", d.QueryEventsByID, r.QueryEventsByID, &api.QueryEventsByIDRequest{RoomID: roomID})

	same(c, "before", d.QueryStateAtEvent, r.QueryStateAtEvent, &api.QueryStateAtEventRequest{RoomID: roomID, EventID: nameID})
	same(c, "after", d.QueryStateAtEvent, r.QueryStateAtEvent, &api.QueryStateAtEventRequest{RoomID: roomID, EventID: nameID, After: true})
	same(c, "tuples", d.QueryStateAtEvent, r.QueryStateAtEvent, &api.QueryStateAtEventRequest{RoomID: roomID, EventID: msgID, After: true,
		Tuples: []api.StateKeyTuple{{EventType: spec.MRoomName}, {EventType: spec.MRoomJoinRules}}})
	same(c, "unknown event", d.QueryStateAtEvent, r.QueryStateAtEvent, &api.QueryStateAtEventRequest{RoomID: roomID, EventID: "$unknown"})
	allowed := same(c, "own server", d.QueryServerAllowed, r.QueryServerAllowed, &api.QueryServerAllowedRequest{RoomID: roomID, ServerName: serverName, EventIDs: ids})
	if len(allowed.Allowed) != 6 {
		t.Fatalf("want the 6 known events allowed, got %v", allowed.Allowed)
	}
	same(c, "unknown room", d.QueryServerAllowed, r.QueryServerAllowed, &api.QueryServerAllowedRequest{RoomID: "!nope:" + serverName, ServerName: serverName, EventIDs: ids})
	mine := same(c, "member", d.QueryUserAllowed, r.QueryUserAllowed, &api.QueryUserAllowedRequest{RoomID: roomID, UserID: alice, EventIDs: ids})
	if len(mine.Allowed) != 6 {
		t.Fatalf("want the 6 known events allowed to alice, got %v", mine.Allowed)
	}
	same(c, "unknown room", d.QueryUserAllowed, r.QueryUserAllowed, &api.QueryUserAllowedRequest{RoomID: "!nope:" + serverName, UserID: alice, EventIDs: ids})
	timeline(t, e, c, roomID, alice, msgID)
	directory(t, c, d, r, roomID, alice)
}

// timeline pages through the room's stored timeline (its 6 events, then a redaction of the
// message) and lists it among the stored rooms.
func timeline(t *testing.T, e *env, c *checker, roomID, alice, msgID string) {
	d, r := e.direct, e.remote
	redaction := roomtest.Proto(alice, spec.MRoomRedaction, nil, map[string]string{"redacts": msgID})
	redaction.Proto.Redacts = msgID
	res := e.submit(t, api.InputRoomEvents{RoomID: roomID, Events: []api.InputRoomEvent{redaction}})
	if res[0].Err != nil {
		t.Fatalf("redaction rejected: %v", res[0].Err)
	}
	redactionID := res[0].EventID
	first := same(c, "newest", d.QueryRoomEvents, r.QueryRoomEvents, &api.QueryRoomEventsRequest{RoomID: roomID, Limit: 4})
	if len(first.Events) != 4 || first.NextBeforeNID == 0 {
		t.Fatalf("first page: %d events, next %d; want 4 and more", len(first.Events), first.NextBeforeNID)
	}
	rest := same(c, "older", d.QueryRoomEvents, r.QueryRoomEvents, &api.QueryRoomEventsRequest{RoomID: roomID, BeforeNID: first.NextBeforeNID, Limit: 4})
	if len(rest.Events) != 3 || rest.NextBeforeNID != 0 {
		t.Fatalf("second page: %d events, next %d; want the last 3", len(rest.Events), rest.NextBeforeNID)
	}
	all := append(first.Events, rest.Events...)
	for i := 1; i < len(all); i++ {
		if all[i].NID >= all[i-1].NID {
			t.Fatalf("event %d (nid %d) not older than event %d (nid %d)", i, all[i].NID, i-1, all[i-1].NID)
		}
	}
	if all[0].EventID != redactionID || all[1].EventID != msgID || !all[1].Redacted || all[1].Event == nil || !all[1].Event.Redacted() {
		t.Fatalf("newest two: %+v, %+v; want the redaction, then the message redacted", all[0], all[1])
	}
	if all[6].Event == nil || all[6].Event.Type() != spec.MRoomCreate {
		t.Fatalf("oldest event %+v, want the create event", all[6])
	}
	same(c, "unknown room", d.QueryRoomEvents, r.QueryRoomEvents, &api.QueryRoomEventsRequest{RoomID: "!nope:" + serverName})
	if rooms := same(c, "from the start", d.QueryRooms, r.QueryRooms, &api.QueryRoomsRequest{}); !slices.Contains(rooms.RoomIDs, roomID) || !slices.IsSorted(rooms.RoomIDs) {
		t.Fatalf("rooms %v: want %s among them, sorted", rooms.RoomIDs, roomID)
	}
	if rooms := same(c, "after the room", d.QueryRooms, r.QueryRooms, &api.QueryRoomsRequest{AfterRoomID: roomID}); slices.Contains(rooms.RoomIDs, roomID) {
		t.Fatalf("rooms after %s: %v", roomID, rooms.RoomIDs)
	}
}

// once calls a Perform method over HTTP only (calling it twice would change its answer).
func once[Res, Req any](c *checker, remote func(context.Context, *Req) (*Res, error), req *Req) *Res {
	c.t.Helper()
	method, err := ihttp.MethodName[Req]()
	if err != nil {
		c.t.Fatal(err)
	}
	c.seen[method] = true
	res, err := remote(context.Background(), req)
	if err != nil {
		c.t.Fatalf("%s: %v", method, err)
	}
	return res
}

// directory round-trips the aliases and the published directory.
func directory(t *testing.T, c *checker, d api.ServerAPI, r *inthttp.Client, roomID, alice string) {
	alias := "#room" + roomID[1:5] + ":" + serverName
	if res := once(c, r.PerformSetRoomAlias, &api.PerformSetRoomAliasRequest{Alias: alias, RoomID: roomID, Creator: alice}); !res.Created {
		t.Fatalf("set alias: %+v", res)
	}
	if res := once(c, r.PerformSetRoomAlias, &api.PerformSetRoomAliasRequest{Alias: alias, RoomID: "!other:x", Creator: "@bob:x"}); res.Created || res.RoomID != roomID || res.Creator != alice {
		t.Fatalf("an existing alias moved or its owner is wrong: %+v", res)
	}
	if got := same(c, "known", d.QueryRoomAlias, r.QueryRoomAlias, &api.QueryRoomAliasRequest{Alias: alias}); got.RoomID != roomID {
		t.Fatalf("alias resolves to %+v", got)
	}
	same(c, "unknown", d.QueryRoomAlias, r.QueryRoomAlias, &api.QueryRoomAliasRequest{Alias: "#nope:" + serverName})
	if got := same(c, "room", d.QueryAliasesForRoom, r.QueryAliasesForRoom, &api.QueryAliasesForRoomRequest{RoomID: roomID}); !slices.Equal(got.Aliases, []string{alias}) {
		t.Fatalf("aliases %v", got.Aliases)
	}
	once(c, r.PerformSetRoomVisibility, &api.PerformSetRoomVisibilityRequest{RoomID: roomID, Public: true})
	if got := same(c, "public", d.QueryRoomVisibility, r.QueryRoomVisibility, &api.QueryRoomVisibilityRequest{RoomID: roomID}); !got.Public {
		t.Fatal("room not public")
	}
	if got := same(c, "all", d.QueryPublishedRooms, r.QueryPublishedRooms, &api.QueryPublishedRoomsRequest{}); !slices.Contains(got.RoomIDs, roomID) {
		t.Fatalf("published %v", got.RoomIDs)
	}
	sum := same(c, "known and unknown", d.QueryRoomSummaries, r.QueryRoomSummaries, &api.QueryRoomSummariesRequest{RoomIDs: []string{"!nope:x", roomID}})
	if len(sum.Rooms) != 1 || sum.Rooms[0] != (api.RoomSummary{RoomID: roomID, Name: "one", JoinRule: "invite", NumJoinedMembers: 1}) {
		t.Fatalf("summaries %+v", sum.Rooms)
	}
	list, err := api.ListPublicRooms(context.Background(), r, api.PublicRoomsRequest{Filter: "ONE"})
	if err != nil || len(list.Chunk) != 1 || list.Chunk[0].RoomID != roomID {
		t.Fatalf("public rooms %+v %v", list, err)
	}
	if res := once(c, r.PerformRemoveRoomAlias, &api.PerformRemoveRoomAliasRequest{Alias: alias}); !res.Removed {
		t.Fatal("alias not removed")
	}
	if res, _ := r.PerformRemoveRoomAlias(context.Background(), &api.PerformRemoveRoomAliasRequest{Alias: alias}); res == nil || res.Removed {
		t.Fatalf("removed twice: %+v", res)
	}
	once(c, r.PerformSetRoomVisibility, &api.PerformSetRoomVisibilityRequest{RoomID: roomID, Public: false})
	if got := same(c, "private", d.QueryRoomVisibility, r.QueryRoomVisibility, &api.QueryRoomVisibilityRequest{RoomID: roomID}); got.Public {
		t.Fatal("room still public")
	}
}

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
