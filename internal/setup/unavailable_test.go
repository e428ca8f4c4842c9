package setup

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/matrix-org/dendrite/internal/config"
)

// TestClientAPIPeerUnreachable runs a polylith clientapi and userapi whose roomserver
// shard, and then userapi too, cannot be reached: requests that need them answer 503
// M_UNKNOWN with Retry-After, not 500.
func TestClientAPIPeerUnreachable(t *testing.T) {
	broker, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	users, client, nobody := freePort(t), freePort(t), freePort(t)
	yaml := fmt.Sprintf(`global:
  server_name: poly.test
  data_dir: %s
  log:
    kind: kafka
    partitions: 2
    kafka:
      brokers: [%q]
client_api:
  registration_disabled: false
  rate_limiting:
    enabled: false
user_api:
  bcrypt_cost: 4
  internal_api:
    connect: http://127.0.0.1:%d
room_server:
  internal_api:
    connect: http://127.0.0.1:%d
`, t.TempDir(), broker.ListenAddrs()[0], users, nobody)
	cfg, err := config.LoadBytes([]byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	// One key for both processes, as a deployment shares it (made before they race to).
	if _, _, err := config.LoadOrGenerateKey(cfg.SigningKeyPath()); err != nil {
		t.Fatal(err)
	}
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	run := func(opts ComponentOptions) context.CancelFunc {
		cctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- RunComponent(cctx, cfg, logger, opts) }()
		return func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("%s: %v", opts.Name, err)
			}
		}
	}
	stopUsers := run(ComponentOptions{Name: "userapi", InternalListen: fmt.Sprintf("127.0.0.1:%d", users)})
	defer func() { stopUsers() }()
	stopClient := run(ComponentOptions{Name: "clientapi", InternalListen: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		PublicListen: fmt.Sprintf("127.0.0.1:%d", client)})
	defer stopClient()
	base := fmt.Sprintf("http://127.0.0.1:%d/_matrix/client/v3", client)
	for _, path := range []string{fmt.Sprintf("http://127.0.0.1:%d/ready", users), base + "/login"} {
		deadline := time.Now().Add(30 * time.Second)
		for status(path) != http.StatusOK {
			if time.Now().After(deadline) {
				t.Fatalf("%s never answered 200", path)
			}
			time.Sleep(20 * time.Millisecond) // polling with a deadline
		}
	}
	do := func(method, url, token string, body any) (*http.Response, map[string]any) {
		t.Helper()
		b, _ := json.Marshal(body) // plain data always encodes
		req, err := http.NewRequest(method, url, bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close() // nolint: errcheck // read-only body
		var out map[string]any
		if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
			t.Fatalf("%s %s: %d with a body that is not JSON: %v", method, url, res.StatusCode, err)
		}
		return res, out
	}
	wantUnavailable := func(what string, res *http.Response, body map[string]any) {
		t.Helper()
		if res.StatusCode != http.StatusServiceUnavailable || body["errcode"] != "M_UNKNOWN" || res.Header.Get("Retry-After") == "" {
			t.Fatalf("%s: %d %v (Retry-After %q), want 503 M_UNKNOWN with Retry-After", what, res.StatusCode, body, res.Header.Get("Retry-After"))
		}
	}
	res, body := do(http.MethodPost, base+"/register", "", map[string]any{"username": "alice", "password": "a long password here", "auth": map[string]string{"type": "m.login.dummy"}})
	token, _ := body["access_token"].(string)
	if res.StatusCode != http.StatusOK || token == "" {
		t.Fatalf("register with userapi up: %d %v", res.StatusCode, body)
	}
	res, body = do(http.MethodPost, base+"/createRoom", token, map[string]any{})
	wantUnavailable("createRoom with the roomserver shard down", res, body)
	res, body = do(http.MethodGet, base+"/joined_rooms", token, nil)
	wantUnavailable("joined_rooms with the roomserver shard down", res, body)

	stopUsers()
	stopUsers = func() {}
	res, body = do(http.MethodGet, base+"/devices", token, nil)
	wantUnavailable("devices with userapi down", res, body)
	res, body = do(http.MethodPost, base+"/register", "", map[string]any{"username": "bob", "password": "a long password here", "auth": map[string]string{"type": "m.login.dummy"}})
	wantUnavailable("register with userapi down", res, body)
}
