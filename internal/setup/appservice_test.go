package setup

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// fakeAppService is an application service on loopback: it records the transactions the
// homeserver sends (checking the hs_token), answers 503 while down, and answers user and
// alias queries with onUser and onAlias.
type fakeAppService struct {
	t       *testing.T
	hsToken string
	srv     *httptest.Server

	mu sync.Mutex
	// txns are the contents of each transaction ID seen; events every event ID of the
	// distinct transactions, in arrival order; failed counts answers given while down.
	txns   map[string]string
	events []string
	bodies map[string]string
	// ephemeral are the types of the ephemeral events received, in order; toDevice the
	// to-device messages as "type to_user_id to_device_id sender".
	ephemeral []string
	toDevice  []string
	failed    int
	down      bool
	onAlias   func(alias string) int
	onUser    func(userID string) int
}

func newFakeAppService(t *testing.T, hsToken string) *fakeAppService {
	f := &fakeAppService{t: t, hsToken: hsToken, txns: map[string]string{}, bodies: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /_matrix/app/v1/transactions/{txn}", f.transaction)
	mux.HandleFunc("GET /_matrix/app/v1/rooms/{alias}", func(w http.ResponseWriter, r *http.Request) {
		f.query(w, r, f.onAlias, r.PathValue("alias"))
	})
	mux.HandleFunc("GET /_matrix/app/v1/users/{user}", func(w http.ResponseWriter, r *http.Request) {
		f.query(w, r, f.onUser, r.PathValue("user"))
	})
	f.srv = httptest.NewServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeAppService) authorized(w http.ResponseWriter, r *http.Request) bool {
	if r.Header.Get("Authorization") != "Bearer "+f.hsToken {
		f.t.Errorf("request %s without the hs_token", r.URL.Path)
		w.WriteHeader(http.StatusForbidden)
		return false
	}
	return true
}

func (f *fakeAppService) query(w http.ResponseWriter, r *http.Request, fn func(string) int, arg string) {
	if !f.authorized(w, r) {
		return
	}
	status := http.StatusNotFound
	if fn != nil {
		status = fn(arg)
	}
	w.WriteHeader(status)
	_, _ = w.Write([]byte("{}")) // the homeserver reads the status only
}

func (f *fakeAppService) transaction(w http.ResponseWriter, r *http.Request) {
	if !f.authorized(w, r) {
		return
	}
	var body struct {
		Events []struct {
			EventID string `json:"event_id"`
			Type    string `json:"type"`
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		} `json:"events"`
		Ephemeral []struct {
			Type string `json:"type"`
		} `json:"ephemeral"`
		ToDevice []struct {
			Type       string `json:"type"`
			Sender     string `json:"sender"`
			ToUserID   string `json:"to_user_id"`
			ToDeviceID string `json:"to_device_id"`
		} `json:"de.sorunome.msc2409.to_device"`
	}
	raw := new(strings.Builder)
	if err := json.NewDecoder(teeReader{r, raw}).Decode(&body); err != nil {
		f.t.Errorf("malformed transaction: %v", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		f.failed++
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	txn := r.PathValue("txn")
	if prev, seen := f.txns[txn]; seen {
		// A retry of an acknowledged transaction must be the same transaction.
		if prev != raw.String() {
			f.t.Errorf("transaction %s sent again with other contents", txn)
		}
	} else {
		f.txns[txn] = raw.String()
		for _, ev := range body.Events {
			f.events = append(f.events, ev.EventID)
			if ev.Type == "m.room.message" {
				f.bodies[ev.EventID] = ev.Content.Body
			}
		}
		for _, ev := range body.Ephemeral {
			f.ephemeral = append(f.ephemeral, ev.Type)
		}
		for _, m := range body.ToDevice {
			f.toDevice = append(f.toDevice, strings.Join([]string{m.Type, m.ToUserID, m.ToDeviceID, m.Sender}, " "))
		}
	}
	_, _ = w.Write([]byte("{}")) // the homeserver reads the status and the object
}

type teeReader struct {
	r *http.Request
	w *strings.Builder
}

func (t teeReader) Read(p []byte) (int, error) {
	n, err := t.r.Body.Read(p)
	t.w.Write(p[:n])
	return n, err
}

// waitEvent waits until the service has received the event.
func (f *fakeAppService) waitEvent(t *testing.T, eventID id.EventID) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		f.mu.Lock()
		got := slices.Contains(f.events, string(eventID))
		f.mu.Unlock()
		if got {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("the application service never received %s", eventID)
}

// messages are the bodies of the m.room.message events received, in order.
func (f *fakeAppService) messages() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for _, id := range f.events {
		if b, ok := f.bodies[id]; ok {
			out = append(out, b)
		}
	}
	return out
}

func (f *fakeAppService) setDown(down bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.down = down
}

func (f *fakeAppService) waitFailure(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		f.mu.Lock()
		n := f.failed
		f.mu.Unlock()
		if n > 0 {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("the homeserver never tried the service while it was down")
}

// stoppableMonolith serves a monolith on loopback; stop ends it (also at the test's end).
func stoppableMonolith(t testing.TB, cfg *config.Dendrite) (url string, stop func()) {
	t.Helper()
	logger := logrus.New()
	logger.SetLevel(logrus.ErrorLevel)
	ctx, cancel := context.WithCancel(context.Background())
	m, err := NewMonolith(ctx, cfg, logger)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, l) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
				t.Errorf("monolith: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return "http://" + l.Addr().String(), stop
}

const (
	asToken = "as-token-for-the-bridge"
	hsToken = "hs-token-for-the-bridge"
)

// appServiceConfig is a monolith config with one registered application service at url
// owning @bridge_* and #bridge_* exclusively.
func appServiceConfig(t testing.TB, engine, url, downURL string) *config.Dendrite {
	t.Helper()
	cfg := config.Defaults()
	cfg.Global.ServerName = "as.test"
	cfg.Global.DataDir = t.TempDir()
	if engine == "postgres" {
		cfg.Global.Database.ConnectionString = test.PostgresDSN(t)
	}
	cfg.ClientAPI.RegistrationDisabled, cfg.ClientAPI.RateLimiting.Enabled, cfg.UserAPI.BCryptCost = false, false, 4
	cfg.AppServiceAPI.MinBackoff, cfg.AppServiceAPI.MaxBackoff = config.Duration(50*time.Millisecond), config.Duration(200*time.Millisecond)
	reg := filepath.Join(cfg.Global.DataDir, "bridge.yaml")
	content := fmt.Sprintf(`id: bridge
url: %s
as_token: %s
hs_token: %s
sender_localpart: bridgebot
rate_limited: false
receive_ephemeral: true
namespaces:
  users:
    - exclusive: true
      regex: "@bridge_.*:as.test"
  aliases:
    - exclusive: true
      regex: "#bridge_.*:as.test"
`, url, asToken, hsToken)
	if err := os.WriteFile(reg, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	// A second service, interested in every room, that never answers: it must delay only
	// itself.
	down := filepath.Join(cfg.Global.DataDir, "down.yaml")
	if err := os.WriteFile(down, []byte("id: down\nurl: "+downURL+"\nas_token: down-as\nhs_token: down-hs\nsender_localpart: downbot\nnamespaces:\n  rooms:\n    - exclusive: false\n      regex: \"!.*\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.AppServiceAPI.ConfigFiles = []string{reg, down}
	if err := cfg.Verify(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// asClient is a client with the service's as_token acting as userID ("" for its sender).
func asClient(t *testing.T, baseURL string, userID id.UserID) *mautrix.Client {
	t.Helper()
	c := e2e.Client(t, baseURL)
	c.AccessToken = asToken
	if userID != "" {
		c.UserID = userID
		c.SetAppServiceUserID = true
	}
	return c
}

// sendText sends n messages "prefix i" as c and returns the last event's ID.
func sendText(t *testing.T, c *mautrix.Client, roomID id.RoomID, prefix string, n int) id.EventID {
	t.Helper()
	var last id.EventID
	for i := range n {
		res, err := c.SendText(context.Background(), roomID, fmt.Sprintf("%s %d", prefix, i))
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		last = res.EventID
	}
	return last
}

func expectedBodies(prefixes map[string]int, order []string) []string {
	var out []string
	for _, p := range order {
		for i := range prefixes[p] {
			out = append(out, fmt.Sprintf("%s %d", p, i))
		}
	}
	return out
}

// checkAppServiceLogin: the service logs in as its registered user @bridge_alice on a device
// (POST /login, m.login.application_service), masquerades as that device (device_id), and
// is refused a user outside its namespace, a user it has not registered, an unknown device,
// and a login without its token.
func checkAppServiceLogin(t *testing.T, url string) {
	t.Helper()
	ctx := context.Background()
	login := func(c *mautrix.Client, user string) (*mautrix.RespLogin, error) {
		return c.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypeAppservice, DeviceID: "BRIDGEDEV",
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: user}})
	}
	res, err := login(asClient(t, url, ""), "bridge_alice")
	if err != nil || res.UserID != "@bridge_alice:as.test" || res.DeviceID != "BRIDGEDEV" || res.AccessToken == "" {
		t.Fatalf("application service login: %+v %v", res, err)
	}
	own := e2e.Client(t, url)
	own.AccessToken = res.AccessToken
	if who, err := own.Whoami(ctx); err != nil || who.UserID != res.UserID || who.DeviceID != "BRIDGEDEV" {
		t.Fatalf("the login's token: %+v %v", who, err)
	}
	dev := asClient(t, url, res.UserID)
	dev.DeviceID, dev.SetAppServiceDeviceID = "BRIDGEDEV", true
	if who, err := dev.Whoami(ctx); err != nil || who.UserID != res.UserID || who.DeviceID != "BRIDGEDEV" {
		t.Fatalf("device masquerading: %+v %v", who, err)
	}
	dev.DeviceID = "NOSUCHDEV"
	_, err = dev.Whoami(ctx)
	e2e.WantErrCode(t, err, http.StatusBadRequest, "M_UNKNOWN_DEVICE")
	_, err = login(asClient(t, url, ""), "@bridgebot_outside:as.test")
	e2e.WantErrCode(t, err, http.StatusBadRequest, "M_EXCLUSIVE")
	_, err = login(asClient(t, url, ""), "bridge_unregistered")
	e2e.WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
	bad := e2e.Client(t, url)
	bad.AccessToken = "not-a-token"
	_, err = login(bad, "bridge_alice")
	e2e.WantErrCode(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	_, err = login(e2e.Client(t, url), "bridge_alice")
	e2e.WantErrCode(t, err, http.StatusUnauthorized, "M_MISSING_TOKEN")
}

// checkToDevice: a to-device message to a device of a user in the service's exclusive
// namespace (@bridge_alice's BRIDGEDEV, from checkAppServiceLogin) reaches the service
// (MSC2409), once; one to a user outside it, sent before, never does.
func checkToDevice(t *testing.T, as *fakeAppService, alice *mautrix.Client) {
	t.Helper()
	ctx := context.Background()
	send := func(userID id.UserID, deviceID id.DeviceID) {
		t.Helper()
		_, err := alice.SendToDevice(ctx, event.NewEventType("org.example.ping"), &mautrix.ReqSendToDevice{
			Messages: map[id.UserID]map[id.DeviceID]*event.Content{userID: {deviceID: {Raw: map[string]any{"n": 1}}}}})
		if err != nil {
			t.Fatalf("send to-device: %v", err)
		}
	}
	send(alice.UserID, "*")
	send("@bridge_alice:as.test", "BRIDGEDEV")
	want := []string{"org.example.ping @bridge_alice:as.test BRIDGEDEV " + alice.UserID.String()}
	deadline := time.Now().Add(60 * time.Second)
	for {
		as.mu.Lock()
		got := slices.Clone(as.toDevice)
		as.mu.Unlock()
		if len(got) > 0 {
			if !slices.Equal(got, want) {
				t.Fatalf("the service received the to-device messages %v, want %v", got, want)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("the to-device message never reached the service")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAppServiceBothEngines: an application service registers a ghost in its namespace and
// sends as it; its exclusive namespaces refuse others' registrations and aliases; bad
// tokens and users outside the namespace are refused; it logs in as its users and
// masquerades as their devices; every event of a room with its
// ghost reaches it in order exactly once, also across a time when it is down and across a
// restart of the homeserver with events still queued, and while another service is down
// all along; an unknown alias in its namespace is
// asked of it and created on demand; typing, receipts, presence and to-device messages
// reach it.
func TestAppServiceBothEngines(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			as := newFakeAppService(t, hsToken)
			broken := newFakeAppService(t, "down-hs")
			broken.setDown(true)
			cfg := appServiceConfig(t, engine, as.srv.URL, broken.srv.URL)
			url, stop := stoppableMonolith(t, cfg)
			ctx := context.Background()

			bot := asClient(t, url, "")
			who, err := bot.Whoami(ctx)
			if err != nil || who.UserID != "@bridgebot:as.test" {
				t.Fatalf("the sender was not created: %+v %v", who, err)
			}
			_, err = bot.RegisterAvailable(ctx, "bridge_x")
			e2e.WantErrCode(t, err, http.StatusBadRequest, "M_EXCLUSIVE")
			res, _, err := bot.Register(ctx, &mautrix.ReqRegister[any]{Username: "bridge_alice", Type: mautrix.AuthTypeAppservice, InhibitLogin: true})
			if err != nil || res.UserID != "@bridge_alice:as.test" || res.AccessToken != "" {
				t.Fatalf("register ghost: %+v %v", res, err)
			}
			_, _, err = bot.Register(ctx, &mautrix.ReqRegister[any]{Username: "outsider", Type: mautrix.AuthTypeAppservice, InhibitLogin: true})
			e2e.WantErrCode(t, err, http.StatusBadRequest, "M_EXCLUSIVE")
			bad := e2e.Client(t, url)
			bad.AccessToken = "not-a-token"
			_, _, err = bad.Register(ctx, &mautrix.ReqRegister[any]{Username: "bridge_eve", Type: mautrix.AuthTypeAppservice})
			e2e.WantErrCode(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

			checkAppServiceLogin(t, url)

			alice := e2e.Register(t, url, "alice")
			_, err = alice.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: "bridge_bob", Password: "password-bob"})
			e2e.WantErrCode(t, err, http.StatusBadRequest, "M_EXCLUSIVE")
			_, err = asClient(t, url, "@alice:as.test").Whoami(ctx)
			e2e.WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")
			_, err = asClient(t, url, "@bridge_nobody:as.test").Whoami(ctx)
			e2e.WantErrCode(t, err, http.StatusForbidden, "M_FORBIDDEN")

			ghost := asClient(t, url, "@bridge_alice:as.test")
			if who, err = ghost.Whoami(ctx); err != nil || who.UserID != ghost.UserID {
				t.Fatalf("masquerade: %+v %v", who, err)
			}
			room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Invite: []id.UserID{ghost.UserID}})
			if err != nil {
				t.Fatal(err)
			}
			_, err = alice.CreateAlias(ctx, "#bridge_mine:as.test", room.RoomID)
			e2e.WantErrCode(t, err, http.StatusBadRequest, "M_EXCLUSIVE")
			if _, err = ghost.JoinRoom(ctx, string(room.RoomID), nil); err != nil {
				t.Fatalf("ghost join: %v", err)
			}
			counts := map[string]int{"alice": 10, "ghost": 3, "downtime": 20, "queued": 15, "after": 1}
			sendText(t, alice, room.RoomID, "alice", counts["alice"])
			last := sendText(t, ghost, room.RoomID, "ghost", counts["ghost"])
			as.waitEvent(t, last)

			as.setDown(true)
			sendText(t, alice, room.RoomID, "downtime", counts["downtime"])
			as.waitFailure(t)
			as.setDown(false)

			// Queued while the service is down, delivered by the restarted homeserver.
			as.setDown(true)
			sendText(t, alice, room.RoomID, "queued", counts["queued"])
			stop()
			as.setDown(false)
			url, _ = stoppableMonolith(t, cfg)
			alice.HomeserverURL = e2e.MustParse(t, url)
			last = sendText(t, alice, room.RoomID, "after", counts["after"])
			as.waitEvent(t, last)
			broken.waitFailure(t)
			want := expectedBodies(counts, []string{"alice", "ghost", "downtime", "queued", "after"})
			if got := as.messages(); !slices.Equal(got, want) {
				t.Fatalf("the service received\n%v\nwant\n%v", got, want)
			}

			// An alias in the namespace that does not exist is asked of the service,
			// which creates it.
			bot = asClient(t, url, "")
			as.mu.Lock()
			as.onAlias = func(alias string) int {
				if _, err := bot.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: strings.TrimSuffix(strings.TrimPrefix(alias, "#"), ":as.test")}); err != nil {
					t.Errorf("the service could not create %s: %v", alias, err)
					return http.StatusInternalServerError
				}
				return http.StatusOK
			}
			as.mu.Unlock()
			resolved, err := alice.ResolveAlias(ctx, "#bridge_ondemand:as.test")
			if err != nil || resolved.RoomID == "" {
				t.Fatalf("alias on demand: %+v %v", resolved, err)
			}
			as.mu.Lock()
			as.onAlias = nil
			as.mu.Unlock()
			_, err = alice.ResolveAlias(ctx, "#bridge_nothing:as.test")
			e2e.WantErrCode(t, err, http.StatusNotFound, "M_NOT_FOUND")
			// Typing and receipts in the ghost's room, and the presence of a user sharing
			// a room with the ghost, reach the service (receive_ephemeral).
			if _, err = alice.UserTyping(ctx, room.RoomID, true, 30*time.Second); err != nil {
				t.Fatal(err)
			}
			if err = alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable}); err != nil {
				t.Fatal(err)
			}
			if err = alice.MarkRead(ctx, room.RoomID, last); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(60 * time.Second)
			for {
				as.mu.Lock()
				seen := slices.Clone(as.ephemeral)
				as.mu.Unlock()
				got := slices.Contains(seen, "m.typing") && slices.Contains(seen, "m.receipt") && slices.Contains(seen, "m.presence")
				if got {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("typing, receipts and presence never all reached the service: %v", seen)
				}
				time.Sleep(20 * time.Millisecond)
			}

			checkToDevice(t, as, alice)

			// The service's own directory of a network is apart from the main one.
			dirURL := bot.BuildClientURL("v3", "directory", "list", "appservice", "net", room.RoomID)
			if _, err = bot.MakeRequest(ctx, http.MethodPut, dirURL, map[string]string{"visibility": "public"}, nil); err != nil {
				t.Fatalf("publish in the service's directory: %v", err)
			}
			_, err = alice.MakeRequest(ctx, http.MethodPut, dirURL, map[string]string{"visibility": "public"}, nil)
			e2e.WantErrCode(t, err, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
			listed := func(instance string, all bool) bool {
				res, err := alice.PublicRooms(ctx, &mautrix.ReqPublicRooms{ThirdPartyInstanceID: instance, IncludeAllNetworks: all})
				if err != nil {
					t.Fatal(err)
				}
				return slices.ContainsFunc(res.Chunk, func(r *mautrix.PublicRoomInfo) bool { return r.RoomID == room.RoomID })
			}
			if listed("", false) || !listed("bridge|net", false) || !listed("", true) || listed("bridge|other", false) {
				t.Fatal("the service's directory is not apart from the main one")
			}
			if _, err = bot.MakeRequest(ctx, http.MethodDelete, dirURL, nil, nil); err != nil || listed("bridge|net", false) {
				t.Fatalf("withdraw from the service's directory: %v", err)
			}

			// The service deactivates its users without User-Interactive Authentication.
			temp, _, err := bot.Register(ctx, &mautrix.ReqRegister[any]{Username: "bridge_temp", Type: mautrix.AuthTypeAppservice, InhibitLogin: true})
			if err != nil {
				t.Fatal(err)
			}
			tempClient := asClient(t, url, temp.UserID)
			if _, err = tempClient.MakeRequest(ctx, http.MethodPost, tempClient.BuildClientURL("v3", "account", "deactivate"), struct{}{}, nil); err != nil {
				t.Fatalf("deactivate as the service: %v", err)
			}
			var member event.MemberEventContent
			if err = alice.StateEvent(ctx, room.RoomID, event.StateMember, ghost.UserID.String(), &member); err != nil || member.Membership != event.MembershipJoin {
				t.Fatalf("ghost membership %+v %v", member, err)
			}
		})
	}
}
