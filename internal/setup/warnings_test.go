package setup

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
	logtest "github.com/sirupsen/logrus/hooks/test"

	"github.com/matrix-org/dendrite/internal/config"
)

// startWarnings builds a monolith from a config file's bytes, stops it, and returns the
// warnings logged with a "key" field, by key.
func startWarnings(t *testing.T, file []byte) map[string]string {
	t.Helper()
	cfg, err := config.LoadBytes(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Global.DataDir = t.TempDir()
	logger, hook := logtest.NewNullLogger()
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
	cancel()
	if err = m.Run(ctx, l); err != nil && !errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, e := range hook.AllEntries() {
		if key, ok := e.Data["key"].(string); ok && e.Level == logrus.WarnLevel {
			out[key] = e.Message
		}
	}
	return out
}

// TestStartupWarnings: unknown keys are logged with their YAML path, and open registration
// (the generated development config) is logged with how to close it; a config with neither
// logs neither, and an unknown key does not stop the start.
func TestStartupWarnings(t *testing.T) {
	got := startWarnings(t, []byte("client_api:\n  registration_disabeld: true\n  rate_limiting:\n    burts: 3\n"))
	for _, key := range []string{"client_api.registration_disabeld", "client_api.rate_limiting.burts"} {
		if !strings.Contains(got[key], "unknown config key") {
			t.Errorf("no unknown-key warning for %s: %v", key, got)
		}
	}
	if _, ok := got["client_api.registration_disabled"]; ok {
		t.Errorf("closed registration warned: %v", got)
	}

	got = startWarnings(t, config.DevConfig("unused"))
	if msg := got["client_api.registration_disabled"]; !strings.Contains(msg, "open to anyone") || !strings.Contains(msg, "registration_disabled: true") {
		t.Errorf("open registration of the development config: %v", got)
	}

	if got = startWarnings(t, config.Sample()); len(got) != 0 {
		t.Errorf("the sample config warned: %v", got)
	}
}

// TestStartupWarningsPerProcess: in the polylith every process reports unknown keys, and
// only the clientapi process, which serves registration, reports open registration.
func TestStartupWarningsPerProcess(t *testing.T) {
	cfg, err := config.LoadBytes([]byte("client_api:\n  registration_disabled: false\nroom_server:\n  shard: 2\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, clientAPI := range []bool{false, true} {
		logger, hook := logtest.NewNullLogger()
		warnConfig(cfg, logrus.NewEntry(logger), clientAPI)
		keys := map[string]bool{}
		for _, e := range hook.AllEntries() {
			if e.Level == logrus.WarnLevel {
				keys[e.Data["key"].(string)] = true
			}
		}
		if !keys["room_server.shard"] || keys["client_api.registration_disabled"] != clientAPI {
			t.Errorf("clientapi process %v: warnings for %v", clientAPI, keys)
		}
	}
}
