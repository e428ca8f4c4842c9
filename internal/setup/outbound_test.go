package setup

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// acceptLog is a TCP listener on loopback that records the peer address of every
// connection it accepts.
type acceptLog struct {
	l     net.Listener
	mu    sync.Mutex
	peers []string
}

func newAcceptLog(t *testing.T) *acceptLog {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &acceptLog{l: l}
	t.Cleanup(func() { _ = l.Close() }) // ends the accept loop
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			a.mu.Lock()
			a.peers = append(a.peers, c.RemoteAddr().String())
			a.mu.Unlock()
			_ = c.Close() // nothing is served
		}
	}()
	return a
}

// othersBefore connects once more as a marker, waits until that connection is accepted and
// returns the connections accepted before it: the listener's backlog is accepted in order,
// so any connection the server under test made earlier is among them.
func (a *acceptLog) othersBefore(t *testing.T) []string {
	t.Helper()
	c, err := net.Dial("tcp", a.l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close() // nolint: errcheck // marker only
	marker := c.LocalAddr().String()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		a.mu.Lock()
		for i, p := range a.peers {
			if p == marker {
				others := append([]string(nil), a.peers[:i]...)
				a.mu.Unlock()
				return others
			}
		}
		a.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("marker connection never accepted")
	return nil
}

// TestOutboundDenied runs a monolith with global.deny_networks absent (the default list)
// and asks it, as a client and as a server, for things held by a "server" on 127.0.0.1
// (directory, alias, joins, an invite, a notary query): every answer is a clean Matrix
// error (401 without a token for a remote directory, else 502 or 404; the notary answers
// no keys), and no connection reaches the address.
func TestOutboundDenied(t *testing.T) {
	cfg := config.Defaults()
	cfg.Global.ServerName = "deny.test"
	cfg.Global.DataDir = t.TempDir()
	cfg.ClientAPI.RegistrationDisabled, cfg.ClientAPI.RateLimiting.Enabled, cfg.UserAPI.BCryptCost = false, false, 4
	base := runMonolith(t, cfg)
	target := newAcceptLog(t)
	inside := target.l.Addr().String()
	alice := e2e.Register(t, base, "alice")
	room, err := alice.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}

	cases := []struct {
		name, method, path, token string
		status                    int
		code                      string
	}{
		{"remote directory without a token", http.MethodGet, "/_matrix/client/v3/publicRooms?server=" + inside, "", http.StatusUnauthorized, "M_MISSING_TOKEN"},
		{"remote directory", http.MethodGet, "/_matrix/client/v3/publicRooms?server=" + inside, alice.AccessToken, http.StatusBadGateway, "M_UNKNOWN"},
		{"remote directory, filtered", http.MethodPost, "/_matrix/client/v3/publicRooms?server=" + inside, alice.AccessToken, http.StatusBadGateway, "M_UNKNOWN"},
		{"remote alias", http.MethodGet, "/_matrix/client/v3/directory/room/" + url.PathEscape("#x:"+inside), "", http.StatusBadGateway, "M_UNKNOWN"},
		{"join by remote alias", http.MethodPost, "/_matrix/client/v3/join/" + url.PathEscape("#x:"+inside), alice.AccessToken, http.StatusBadGateway, "M_UNKNOWN"},
		{"join by room ID", http.MethodPost, "/_matrix/client/v3/join/" + url.PathEscape("!room:"+inside) + "?server_name=" + inside, alice.AccessToken, http.StatusNotFound, "M_NOT_FOUND"},
		{"invite a remote user", http.MethodPost, "/_matrix/client/v3/rooms/" + url.PathEscape(room.RoomID.String()) + "/invite", alice.AccessToken, http.StatusBadGateway, "M_UNKNOWN"},
		{"notary key query", http.MethodGet, "/_matrix/key/v2/query/" + inside, "", http.StatusOK, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := "{}"
			if c.name == "invite a remote user" {
				body = `{"user_id":"@bob:` + inside + `"}`
			}
			req, err := http.NewRequest(c.method, base+c.path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			if c.token != "" {
				req.Header.Set("Authorization", "Bearer "+c.token)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Body.Close() // nolint: errcheck // read below
			b, _ := io.ReadAll(res.Body)
			var answer struct {
				Code    string `json:"errcode"`
				Message string `json:"error"`
			}
			_ = json.Unmarshal(b, &answer) // checked through the fields
			if res.StatusCode != c.status || answer.Code != c.code {
				t.Fatalf("%d %s, want %d %s", res.StatusCode, b, c.status, c.code)
			}
			if strings.Contains(answer.Message, "deny") || strings.Contains(answer.Message, "dial") {
				t.Fatalf("internal detail in the answer: %s", b)
			}
		})
	}
	if others := target.othersBefore(t); len(others) != 0 {
		t.Fatalf("the denied address was connected to from %v", others)
	}
}
