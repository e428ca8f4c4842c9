package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// binary is the dendrite binary built once for the package's tests.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "dendrite-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "dendrite")
	out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build dendrite: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	_ = os.RemoveAll(dir) // best effort: the temp dir holds only the binary
	os.Exit(code)
}

// server is a dendrite process started from the binary.
type server struct {
	t      *testing.T
	cmd    *exec.Cmd
	url    string
	config string
	logs   *bytes.Buffer
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return addr
}

// writeConfig writes a config with only the contract's keys.
func writeConfig(t *testing.T, dataDir string) string {
	t.Helper()
	path := filepath.Join(dataDir, "test.yaml")
	cfg := fmt.Sprintf("global:\n  server_name: e2e.test\n  data_dir: %s\nclient_api:\n  registration_disabled: false\n  registration_shared_secret: s3cret\n  rate_limiting:\n    enabled: false\n", dataDir)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func startServer(t *testing.T, config string) *server {
	t.Helper()
	addr := freeAddr(t)
	s := &server{t: t, url: "http://" + addr, config: config, logs: &bytes.Buffer{}}
	s.cmd = exec.Command(binary, "--config", config, "--http-bind-address", addr)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(s.url + "/_matrix/client/versions")
		if err == nil {
			_ = resp.Body.Close() // only the status matters
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			s.stop()
			t.Fatalf("server did not come up: %v\n%s", err, s.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(s.stop)
	return s
}

// stop sends SIGTERM and waits for a clean exit.
func (s *server) stop() {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM) // the process may already be gone
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			s.t.Errorf("server exited with %v\n%s", err, s.logs)
		}
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill() // it ignored SIGTERM; the test already failed
		s.t.Errorf("server did not stop on SIGTERM\n%s", s.logs)
	}
}

func client(t *testing.T, s *server) *mautrix.Client {
	t.Helper()
	c, err := mautrix.NewClient(s.url, "", "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func register(t *testing.T, s *server, name string) *mautrix.Client {
	t.Helper()
	c := client(t, s)
	ctx := context.Background()
	res, err := c.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: name, Password: "password-" + name})
	if err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
	c.UserID, c.AccessToken, c.DeviceID = res.UserID, res.AccessToken, res.DeviceID
	return c
}

// timeline collects the message bodies and event IDs a client sees in one room via /sync.
type timeline struct {
	since  string
	events []*event.Event
}

func (tl *timeline) sync(t *testing.T, c *mautrix.Client, roomID id.RoomID) *mautrix.RespSync {
	t.Helper()
	res, err := c.SyncRequest(context.Background(), 0, tl.since, "", false, "")
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	tl.since = res.NextBatch
	if room := res.Rooms.Join[roomID]; room != nil {
		tl.events = append(tl.events, room.Timeline.Events...)
	}
	if room := res.Rooms.Leave[roomID]; room != nil {
		tl.events = append(tl.events, room.Timeline.Events...)
	}
	return res
}

func (tl *timeline) bodies() []string {
	var out []string
	for _, e := range tl.events {
		if e.Type == event.EventMessage {
			out = append(out, e.Content.Raw["body"].(string))
		}
	}
	return out
}

func wantErrCode(t *testing.T, err error, status int, code string) {
	t.Helper()
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil {
		t.Fatalf("want HTTP %d %s, got %v", status, code, err)
	}
	if httpErr.Response.StatusCode != status || httpErr.RespError == nil || httpErr.RespError.ErrCode != code {
		t.Fatalf("want HTTP %d %s, got %d %+v", status, code, httpErr.Response.StatusCode, httpErr.RespError)
	}
}

// TestMonolithStory drives two users through a room's life with a real Matrix client, with a
// restart of the server in the middle: nothing is lost or repeated.
func TestMonolithStory(t *testing.T) {
	dataDir := t.TempDir()
	config := writeConfig(t, dataDir)
	s := startServer(t, config)
	ctx := context.Background()
	alice, bob := register(t, s, "alice"), register(t, s, "bob")

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Story", Topic: "first", Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatalf("createRoom: %v", err)
	}
	roomID := created.RoomID
	var bobTL, aliceTL timeline
	res := bobTL.sync(t, bob, roomID)
	if res.Rooms.Invite[roomID] == nil {
		t.Fatalf("bob's sync has no invite for %s", roomID)
	}
	if _, err = bob.JoinRoomByID(ctx, roomID); err != nil {
		t.Fatalf("bob joins: %v", err)
	}
	aliceTL.sync(t, alice, roomID)
	for i := 0; i < 3; i++ {
		if _, err = alice.SendText(ctx, roomID, fmt.Sprintf("a%d", i)); err != nil {
			t.Fatalf("send: %v", err)
		}
	}
	if _, err = alice.SendStateEvent(ctx, roomID, event.StateTopic, "", map[string]string{"topic": "second"}); err != nil {
		t.Fatalf("topic: %v", err)
	}
	bobTL.sync(t, bob, roomID)
	if got := strings.Join(bobTL.bodies(), ","); got != "a0,a1,a2" {
		t.Fatalf("bob sees %q", got)
	}
	var topic event.TopicEventContent
	if err = bob.StateEvent(ctx, roomID, event.StateTopic, "", &topic); err != nil || topic.Topic != "second" {
		t.Fatalf("topic is %q (%v)", topic.Topic, err)
	}

	// Restart in the middle: the same clients keep their tokens and sync positions.
	s.stop()
	s = startServer(t, config)
	alice.HomeserverURL, bob.HomeserverURL = mustParse(t, s.url), mustParse(t, s.url)

	if _, err = bob.SendText(ctx, roomID, "b0"); err != nil {
		t.Fatalf("send after restart: %v", err)
	}
	aliceTL.sync(t, alice, roomID)
	if got := strings.Join(aliceTL.bodies(), ","); got != "a0,a1,a2,b0" {
		t.Fatalf("alice sees %q", got)
	}
	members, err := alice.JoinedMembers(ctx, roomID)
	if err != nil || len(members.Joined) != 2 {
		t.Fatalf("joined members: %+v %v", members, err)
	}
	// History, backwards, holds every message exactly once.
	msgs, err := bob.Messages(ctx, roomID, "", "", mautrix.DirectionBackward, nil, 100)
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	var back []string
	for _, e := range msgs.Chunk {
		if e.Type == event.EventMessage {
			back = append([]string{e.Content.Raw["body"].(string)}, back...)
		}
	}
	if got := strings.Join(back, ","); got != "a0,a1,a2,b0" {
		t.Fatalf("/messages holds %q", got)
	}

	// Bob leaves: he can no longer send, and alice sees the leave.
	if _, err = bob.LeaveRoom(ctx, roomID); err != nil {
		t.Fatalf("leave: %v", err)
	}
	_, err = bob.SendText(ctx, roomID, "ghost")
	wantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	aliceTL.sync(t, alice, roomID)
	left := false
	for _, e := range aliceTL.events {
		if e.Type == event.StateMember && e.GetStateKey() == bob.UserID.String() && e.Content.Raw["membership"] == string(event.MembershipLeave) {
			left = true
		}
	}
	if !left {
		t.Fatal("alice did not see bob leave")
	}
	// Alice bans and unbans bob.
	if _, err = alice.BanUser(ctx, roomID, &mautrix.ReqBanUser{UserID: bob.UserID, Reason: "test"}); err != nil {
		t.Fatalf("ban: %v", err)
	}
	_, err = bob.JoinRoomByID(ctx, roomID)
	wantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	if _, err = alice.UnbanUser(ctx, roomID, &mautrix.ReqUnbanUser{UserID: bob.UserID}); err != nil {
		t.Fatalf("unban: %v", err)
	}
}

// TestMonolithBadInput checks the spec's errors for bad requests.
func TestMonolithBadInput(t *testing.T) {
	s := startServer(t, writeConfig(t, t.TempDir()))
	ctx := context.Background()
	alice := register(t, s, "alice")
	stranger := client(t, s)
	stranger.AccessToken = "not-a-token"
	_, err := stranger.JoinedRooms(ctx)
	wantErrCode(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	stranger.AccessToken = ""
	_, err = stranger.JoinedRooms(ctx)
	wantErrCode(t, err, http.StatusUnauthorized, "M_MISSING_TOKEN")

	_, err = alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomVersion: "999"})
	wantErrCode(t, err, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = alice.SendMessageEvent(ctx, created.RoomID, event.EventMessage, map[string]string{"body": strings.Repeat("x", 70000)})
	wantErrCode(t, err, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
	_, err = alice.SendText(ctx, "!unknown:e2e.test", "hi")
	wantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	bob := register(t, s, "bob")
	_, err = bob.SendText(ctx, created.RoomID, "not a member")
	wantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")

	for _, tc := range []struct {
		body, code string
	}{{"{not json", "M_NOT_JSON"}, {`["an","array"]`, "M_BAD_JSON"}} {
		req, _ := http.NewRequest(http.MethodPost, s.url+"/_matrix/client/v3/createRoom", strings.NewReader(tc.body))
		req.Header.Set("Authorization", "Bearer "+alice.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close() // status is what is checked
		if resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("body %q: status %d", tc.body, resp.StatusCode)
		}
	}
	_, err = client(t, s).Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "wrong"})
	wantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	_, err = client(t, s).RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "alice", Password: "whatever"})
	wantErrCode(t, err, http.StatusBadRequest, "M_USER_IN_USE")
	_, err = client(t, s).RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "Not Valid!", Password: "whatever"})
	wantErrCode(t, err, http.StatusBadRequest, "M_INVALID_USERNAME")
}
