package setup

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime/debug"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// runMonolithTLS serves a monolith on a plain and a TLS listener until the test ends and
// returns both base URLs.
func runMonolithTLS(t *testing.T, cfg *config.Dendrite) (plain, secure string) {
	t.Helper()
	logger := logrus.New()
	logger.SetLevel(logrus.WarnLevel)
	ctx, cancel := context.WithCancel(context.Background())
	m, err := NewMonolith(ctx, cfg, logger)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	var ls [2]net.Listener
	for i := range ls {
		if ls[i], err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			cancel()
			t.Fatal(err)
		}
	}
	cert, key := e2e.TLSCert(t, t.TempDir())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, ls[0], TLSListener{Listener: ls[1], CertFile: cert, KeyFile: key}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("monolith: %v", err)
		}
	})
	return "http://" + ls[0].Addr().String(), "https://" + ls[1].Addr().String()
}

var tlsClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} // nolint: gosec // test certificate

// get answers the status and body of GET url, 0 when nothing answers.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	res, err := tlsClient.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close() // nolint: errcheck // read below
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

func metricsConfig(t *testing.T, enabled bool, listen string) *config.Dendrite {
	cfg := config.Defaults()
	cfg.Global.ServerName = "metrics.test"
	cfg.Global.DataDir = t.TempDir()
	cfg.Global.Metrics = config.MetricsOptions{Enabled: enabled, Listen: listen}
	return cfg
}

// TestMonolithMetricsListener: the public listeners (plain and the TLS federation one)
// never serve /metrics or the profiler; global.metrics.listen serves both, and with
// global.metrics.enabled off nothing listens there.
func TestMonolithMetricsListener(t *testing.T) {
	t.Run("enabled", func(t *testing.T) {
		addr := e2e.FreeAddr(t)
		plain, secure := runMonolithTLS(t, metricsConfig(t, true, addr))
		for _, base := range []string{plain, secure} {
			if code, _ := get(t, base+"/health"); code != http.StatusOK {
				t.Fatalf("%s/health: %d", base, code)
			}
			for _, path := range []string{"/metrics", "/debug/pprof/", "/debug/pprof/cmdline"} {
				if code, body := get(t, base+path); code != http.StatusNotFound {
					t.Fatalf("public %s%s: %d %.200s", base, path, code, body)
				}
			}
		}
		code, body := get(t, "http://"+addr+"/metrics")
		if code != http.StatusOK || !strings.Contains(body, "go_goroutines") || !strings.Contains(body, "dendrite_") {
			t.Fatalf("metrics listener /metrics: %d %.300s", code, body)
		}
		if code, _ := get(t, "http://"+addr+"/debug/pprof/"); code != http.StatusOK {
			t.Fatalf("metrics listener /debug/pprof/: %d", code)
		}
	})
	t.Run("disabled", func(t *testing.T) {
		addr := e2e.FreeAddr(t)
		plain, _ := runMonolithTLS(t, metricsConfig(t, false, addr))
		if code, _ := get(t, plain+"/health"); code != http.StatusOK { // Run has opened every listener
			t.Fatalf("/health: %d", code)
		}
		if c, err := net.Dial("tcp", addr); err == nil {
			_ = c.Close() // the failure is reported below
			t.Fatal("something listens on global.metrics.listen with metrics disabled")
		}
		if code, _ := get(t, plain+"/metrics"); code != http.StatusNotFound {
			t.Fatalf("public /metrics: %d", code)
		}
	})
}

// TestPolylithMetricsSwitch: a polylith process serves /metrics on its internal listener
// only while global.metrics.enabled is on; the profiler stays there either way.
func TestPolylithMetricsSwitch(t *testing.T) {
	for _, enabled := range []bool{true, false} {
		cfg := config.Defaults()
		cfg.Global.Metrics.Enabled = enabled
		p := &process{e: &env{cfg: cfg}, base: prometheus.NewRegistry()}
		p.base.MustRegister(processCollectors()...)
		srv := httptest.NewServer(p.internalRouter())
		want := http.StatusNotFound
		if enabled {
			want = http.StatusOK
		}
		if code, body := get(t, srv.URL+"/metrics"); code != want {
			t.Errorf("enabled %v: internal /metrics %d %.200s, want %d", enabled, code, body, want)
		}
		if code, _ := get(t, srv.URL+"/debug/pprof/"); code != http.StatusOK {
			t.Errorf("enabled %v: internal /debug/pprof/ %d", enabled, code)
		}
		srv.Close()
	}
}

// TestMonolithMetricsAddressInUse: a busy global.metrics.listen stops the start with an
// error naming the key.
func TestMonolithMetricsAddressInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close() // nolint: errcheck // test end
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	_, err = NewMonolith(context.Background(), metricsConfig(t, true, l.Addr().String()), logger)
	if err == nil || !strings.Contains(err.Error(), "global.metrics.listen") {
		t.Fatalf("NewMonolith on a busy metrics address: %v", err)
	}
}

// TestCacheAndMemoryConfig: global.cache.max_bytes sets the caches' budgets (the roomserver's
// state-event cache takes half of it, as docs/deploy.md says), global.cache.sqlite_max_bytes
// SQLite's soft memory limit (what it does: sqlutil's TestSQLiteMemoryLimit) and
// global.memory_limit the Go runtime's soft memory limit.
func TestCacheAndMemoryConfig(t *testing.T) {
	before := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(before) })
	sqliteBefore, err := sqlutil.SetSQLiteMemoryLimit(0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = sqlutil.SetSQLiteMemoryLimit(sqliteBefore) })
	addr := e2e.FreeAddr(t)
	cfg := metricsConfig(t, true, addr)
	cfg.Global.Cache.MaxBytes = 8 << 20
	cfg.Global.Cache.SQLiteMaxBytes = 5 << 20
	cfg.Global.MemoryLimit = 3 << 30
	runMonolithTLS(t, cfg)
	if got := debug.SetMemoryLimit(-1); got != 3<<30 {
		t.Fatalf("Go memory limit %d, want %d", got, 3<<30)
	}
	status, body := get(t, "http://"+addr+"/metrics")
	if status != http.StatusOK {
		t.Fatalf("/metrics: %d", status)
	}
	for _, want := range []string{
		`dendrite_cache_max_bytes{cache="roomserver_state_events"} 4.194304e+06`,
		`dendrite_cache_max_bytes{cache="roomserver_state_key_nids"} 524288`,
		`dendrite_cache_hits_total{cache="roomserver_state_events"}`,
		`dendrite_sqlite_memory_limit_bytes 5.24288e+06`,
		`dendrite_sqlite_memory_bytes{kind="page_cache"}`,
		`dendrite_sqlite_memory_bytes{kind="total"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
