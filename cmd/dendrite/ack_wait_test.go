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

	"github.com/matrix-org/dendrite/internal/test"
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
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			dsn := ""
			if engine == "postgres" {
				dsn = test.PostgresDSN(t)
			}
			receiptInputWait(t, startFedServerWith(t, dsn, "receipt_server:\n  input_wait_timeout: 1s\n"), dsn)
		})
	}
}

func receiptInputWait(t *testing.T, s *fedServer, dsn string) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	const wait = 60 * time.Second
	alice, bob := e2e.Register(t, s.URL(), "ackreceipt"), e2e.Register(t, s.URL(), "ackreceiptbob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
	var events []id.EventID
	for _, body := range []string{"first", "marker"} {
		sent, err := alice.SendText(ctx, room.RoomID, body)
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
			for _, r := range e2e.ReceiptsIn(res, room.RoomID) {
				if r[1] == string(event.ReceiptTypeRead) && r[2] == alice.UserID.String() {
					counts[id.EventID(r[0])]++
				}
			}
			return counts[eventID] > 0
		}
	}
	roomPath := "/rooms/" + url.PathEscape(room.RoomID.String())
	receiptPath := roomPath + "/receipt/m.read/" + url.PathEscape(read.String())
	markersBody := map[string]string{"m.read": read.String()}

	unlock := lockComponents(ctx, t, s.dataDir, dsn, "receiptserver")
	for _, req := range []struct {
		path string
		body any
	}{{receiptPath, struct{}{}}, {roomPath + "/read_markers", markersBody}} {
		start := time.Now()
		code, errcode, err := clientPost(ctx, s.URL(), alice.AccessToken, req.path, req.body)
		if took := time.Since(start); code != http.StatusGatewayTimeout || errcode != "M_UNKNOWN" || took > answerBound {
			t.Fatalf("POST %s with the receiptserver locked: %d %s %v after %s, want 504 M_UNKNOWN within the configured 1s", req.path, code, errcode, err, took)
		}
	}
	unlock()

	retry(ctx, t, "POST /receipt", func() (int, string, error) {
		return clientPost(ctx, s.URL(), alice.AccessToken, receiptPath, struct{}{})
	})
	retry(ctx, t, "POST /read_markers", func() (int, string, error) {
		return clientPost(ctx, s.URL(), alice.AccessToken, roomPath+"/read_markers", markersBody)
	})
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
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			dsn := ""
			if engine == "postgres" {
				dsn = test.PostgresDSN(t)
			}
			presenceInputWait(t, startFedServerWith(t, dsn, "presence_server:\n  input_wait_timeout: 1s\n"), dsn)
		})
	}
}

func presenceInputWait(t *testing.T, s *fedServer, dsn string) {
	ctx, cancel := context.WithTimeout(context.Background(), 180*time.Second)
	defer cancel()
	const wait = 60 * time.Second
	alice, bob := e2e.Register(t, s.URL(), "ackpresence"), e2e.Register(t, s.URL(), "ackpresencebob")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err = bob.JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatal(err)
	}
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

	unlock := lockComponents(ctx, t, s.dataDir, dsn, "presenceserver")
	start := time.Now()
	code, errcode, err := put("waited")
	if took := time.Since(start); code != http.StatusGatewayTimeout || errcode != "M_UNKNOWN" || took > answerBound {
		t.Fatalf("PUT /presence with the presenceserver locked: %d %s %v after %s, want 504 M_UNKNOWN within the configured 1s", code, errcode, err, took)
	}
	unlock()

	retry(ctx, t, "PUT /presence", func() (int, string, error) { return put("waited") })
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

// retry repeats do, as a client retries after a 5xx, until it answers 200 or ctx ends.
func retry(ctx context.Context, t *testing.T, what string, do func() (int, string, error)) {
	t.Helper()
	for {
		code, errcode, err := do()
		if code == http.StatusOK {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("%s after the lock: %d %s %v", what, code, errcode, err)
		}
		time.Sleep(50 * time.Millisecond) // polling with the test's deadline
	}
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
