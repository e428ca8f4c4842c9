package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// answerBound is how long a request held by a locked owner may take to answer 504 with the
// owner's input_wait_timeout set to 1s: generous for a loaded machine, and well below the
// 30s default, which it would otherwise have waited.
const answerBound = 20 * time.Second

// TestMonolithReceiptInputWaitTimeout: POST /receipt and POST /read_markers answer 200 only
// once the receiptserver has stored the receipt, so a log lost right after the 200 loses
// nothing; receipt_server.input_wait_timeout bounds the wait. Set to 1s, with the
// receiptserver's database held locked (the receipt reaches the log but cannot be taken),
// both answer 504 M_UNKNOWN within answerBound; once the lock is gone the client's retry is
// acknowledged, and bob sees alice's receipt exactly once (a marker receipt for a later
// event, sent after it, shows nothing else comes). Both engines.
func TestMonolithReceiptInputWaitTimeout(t *testing.T) {
	onEachEngine(t, func(t *testing.T, newDSN func() string) {
		dsn := newDSN()
		receiptInputWait(t, startFedServerWith(t, dsn, "receipt_server:\n  input_wait_timeout: 1s\n"), dsn)
	})
}

func receiptInputWait(t *testing.T, s *fedServer, dsn string) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	const wait = 60 * time.Second
	users, room := e2e.UsersInRoom(t, s.URL(), "ackreceipt", 2)
	alice, bob := users[0], users[1]
	var events []id.EventID
	for _, body := range []string{"first", "marker"} {
		sent, err := alice.SendText(ctx, room, body)
		if err != nil {
			t.Fatal(err)
		}
		events = append(events, sent.EventID)
	}
	read, marker := events[0], events[1]
	p := &e2e.Poller{C: bob}
	counts := map[id.EventID]int{}
	receipted := func(eventID id.EventID) func(*mautrix.RespSync) bool {
		return func(res *mautrix.RespSync) bool {
			for _, r := range e2e.ReceiptsIn(res, room) {
				if r[1] == string(event.ReceiptTypeRead) && r[2] == alice.UserID.String() {
					counts[id.EventID(r[0])]++
				}
			}
			return counts[eventID] > 0
		}
	}
	roomPath := "/rooms/" + url.PathEscape(room.String())
	receiptPath := roomPath + "/receipt/m.read/" + url.PathEscape(read.String())
	markersBody := map[string]string{"m.read": read.String()}

	lockedThenRetried(ctx, t, s, dsn, "receiptserver",
		clientCall{"POST /receipt", func() (int, string, error) {
			return clientPost(ctx, s.URL(), alice.AccessToken, receiptPath, struct{}{})
		}},
		clientCall{"POST /read_markers", func() (int, string, error) {
			return clientPost(ctx, s.URL(), alice.AccessToken, roomPath+"/read_markers", markersBody)
		}})
	p.Until(t, wait, "alice's receipt", receipted(read))
	if code, errcode, err := clientPost(ctx, s.URL(), alice.AccessToken, roomPath+"/receipt/m.read/"+url.PathEscape(marker.String()), struct{}{}); code != http.StatusOK {
		t.Fatalf("marker receipt: %d %s %v", code, errcode, err)
	}
	p.Until(t, wait, "the marker receipt", receipted(marker))
	if counts[read] != 1 {
		t.Fatalf("bob saw alice's acknowledged receipt %d times, want once", counts[read])
	}
}

// TestMonolithPresenceInputWaitTimeout: PUT /presence answers 200 only once the
// presenceserver has stored the presence, so a log lost right after the 200 loses nothing
// (and GET /presence right after the 200 shows it); presence_server.input_wait_timeout
// bounds the wait. Set to 1s, with the presenceserver's database held locked, the PUT
// answers 504 M_UNKNOWN within answerBound; once the lock is gone the client's retry is
// acknowledged, and bob sees the status exactly once (a marker status set after it shows
// nothing else comes). Both engines.
func TestMonolithPresenceInputWaitTimeout(t *testing.T) {
	onEachEngine(t, func(t *testing.T, newDSN func() string) {
		dsn := newDSN()
		presenceInputWait(t, startFedServerWith(t, dsn, "presence_server:\n  input_wait_timeout: 1s\n"), dsn)
	})
}

func presenceInputWait(t *testing.T, s *fedServer, dsn string) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	const wait = 60 * time.Second
	users, _ := e2e.UsersInRoom(t, s.URL(), "ackpresence", 2)
	alice, bob := users[0], users[1]
	p := &e2e.Poller{C: bob}
	counts := map[string]int{}
	status := func(msg string) func(*mautrix.RespSync) bool {
		return func(res *mautrix.RespSync) bool {
			for _, ev := range res.Presence.Events {
				if m, _ := ev.Content.Raw["status_msg"].(string); ev.Sender == alice.UserID {
					counts[m]++
				}
			}
			return counts[msg] > 0
		}
	}
	statusPath := "/presence/" + url.PathEscape(alice.UserID.String()) + "/status"
	put := func(msg string) (int, string, error) {
		return clientDo(ctx, http.MethodPut, s.URL(), alice.AccessToken, statusPath, map[string]string{"presence": "unavailable", "status_msg": msg})
	}

	lockedThenRetried(ctx, t, s, dsn, "presenceserver", clientCall{"PUT /presence", func() (int, string, error) { return put("waited") }})
	got, err := alice.GetPresence(ctx, alice.UserID)
	if err != nil || got.StatusMsg != "waited" {
		t.Fatalf("GET /presence right after the acknowledged PUT: %+v %v", got, err)
	}
	p.Until(t, wait, "alice's status", status("waited"))
	if code, errcode, err := put("marker"); code != http.StatusOK {
		t.Fatalf("marker status: %d %s %v", code, errcode, err)
	}
	p.Until(t, wait, "the marker status", status("marker"))
	if counts["waited"] != 1 {
		t.Fatalf("bob saw alice's acknowledged status %d times, want once", counts["waited"])
	}
}

// TestMonolithToDeviceInputWaitTimeout: edu_server.input_wait_timeout bounds how long PUT
// /sendToDevice waits for the eduserver. Set to 1s, with the eduserver's database held
// locked, the send answers 504 M_UNKNOWN within answerBound; once the lock is gone the
// client's retry with the same transaction ID is acknowledged. Both engines.
func TestMonolithToDeviceInputWaitTimeout(t *testing.T) {
	onEachEngine(t, func(t *testing.T, newDSN func() string) {
		dsn := newDSN()
		s := startFedServerWith(t, dsn, "edu_server:\n  input_wait_timeout: 1s\n")
		ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
		defer cancel()
		alice, bob := e2e.Register(t, s.URL(), "waittodevice"), e2e.Register(t, s.URL(), "waittodevicebob")
		body := map[string]any{"messages": map[string]any{bob.UserID.String(): map[string]any{bob.DeviceID.String(): map[string]string{"body": "x"}}}}
		lockedThenRetried(ctx, t, s, dsn, "eduserver", clientCall{"PUT /sendToDevice", func() (int, string, error) {
			return putToDevice(ctx, s.URL(), alice.AccessToken, "waited", body)
		}})
	})
}

// clientCall is a client request by its name, for the test's messages.
type clientCall struct {
	name string
	do   func() (int, string, error)
}

// lockedThenRetried holds component's database locked (lockComponents) while it makes each
// call, each of which must answer 504 M_UNKNOWN within answerBound (the owner's
// input_wait_timeout, set to 1s, and not the 30s default); then it lets the lock go and
// retries each call, as a client would, until it answers 200.
func lockedThenRetried(ctx context.Context, t *testing.T, s *fedServer, dsn, component string, calls ...clientCall) {
	t.Helper()
	unlock := lockComponents(ctx, t, s.dataDir, dsn, component)
	for _, c := range calls {
		start := time.Now()
		code, errcode, err := c.do()
		if took := time.Since(start); code != http.StatusGatewayTimeout || errcode != "M_UNKNOWN" || took > answerBound {
			t.Fatalf("%s with the %s locked: %d %s %v after %s, want 504 M_UNKNOWN within the configured 1s", c.name, component, code, errcode, err, took)
		}
	}
	unlock()
	for _, c := range calls {
		retry(ctx, t, c.name, c.do)
	}
}

// retry repeats do, as a client retries after a 5xx, until it answers 200 or ctx ends.
func retry(ctx context.Context, t *testing.T, what string, do func() (int, string, error)) {
	t.Helper()
	for {
		code, errcode, err := do()
		if code == http.StatusOK {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s, retried: %d %s %v", what, code, errcode, err)
		}
		time.Sleep(50 * time.Millisecond) // polling with the test's deadline
	}
}

// putToDevice is one PUT /sendToDevice (clientDo) of a message of type org.example.taken.
func putToDevice(ctx context.Context, baseURL, token, txnID string, body any) (int, string, error) {
	return clientDo(ctx, http.MethodPut, baseURL, token, "/sendToDevice/org.example.taken/"+url.PathEscape(txnID), body)
}

// clientPost is clientDo with POST.
func clientPost(ctx context.Context, baseURL, token, path string, body any) (int, string, error) {
	return clientDo(ctx, http.MethodPost, baseURL, token, path, body)
}

// clientDo sends one client API request (path under /_matrix/client/v3) with plain HTTP
// (no client retries) and returns its status and Matrix error code.
func clientDo(ctx context.Context, method, baseURL, token, path string, body any) (int, string, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return 0, "", err
	}
	req, err := http.NewRequestWithContext(ctx, method, fmt.Sprintf("%s/_matrix/client/v3%s", baseURL, path), bytes.NewReader(b))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close() // nolint: errcheck // read only
	var e struct {
		Errcode string `json:"errcode"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&e) // a 200's body has no errcode
	return resp.StatusCode, e.Errcode, nil
}
