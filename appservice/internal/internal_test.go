package internal

import (
	"context"
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/appservice/api"
	"github.com/matrix-org/dendrite/appservice/storage"
	assql "github.com/matrix-org/dendrite/appservice/storage/sql"
	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/sqlutil"
	"github.com/matrix-org/dendrite/internal/test"
)

// registrations loads a registration file per service ID, each at its URL, owning
// @<id>_* and #<id>_* exclusively.
func registrations(t *testing.T, urls map[string]string) []*config.ApplicationService {
	t.Helper()
	cfg := config.Defaults()
	cfg.Global.ServerName = "hs"
	dir := t.TempDir()
	for id, url := range urls {
		p := filepath.Join(dir, id+".yaml")
		content := fmt.Sprintf("id: %[1]s\nurl: %[2]s\nas_token: as-%[1]s\nhs_token: hs-%[1]s\nsender_localpart: %[1]sbot\n"+
			"namespaces:\n  users: [{exclusive: true, regex: '@%[1]s_.*:hs'}]\n  aliases: [{exclusive: true, regex: '#%[1]s_.*:hs'}]\n", id, url)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.AppServiceAPI.ConfigFiles = append(cfg.AppServiceAPI.ConfigFiles, p)
	}
	if err := cfg.Verify(); err != nil {
		t.Fatal(err)
	}
	return cfg.AppServiceAPI.Registrations
}

// TestQueryMisses: a user or alias the service answered 404 for is not asked about again
// (the cache of misses); a failed answer (500) is not remembered, nor is an existing user.
func TestQueryMisses(t *testing.T) {
	var mu sync.Mutex
	asked := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		asked[r.URL.Path]++
		mu.Unlock()
		switch r.URL.Path {
		case "/_matrix/app/v1/users/@bridge_flaky:hs":
			w.WriteHeader(http.StatusInternalServerError)
		case "/_matrix/app/v1/users/@bridge_known:hs":
		default:
			w.WriteHeader(http.StatusNotFound)
		}
		_, _ = w.Write([]byte("{}")) // the status is the answer
	}))
	t.Cleanup(srv.Close)
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	q := NewQueries(NewClient(5*time.Second, false), registrations(t, map[string]string{"bridge": srv.URL}), logrus.NewEntry(logger), prometheus.NewRegistry())
	ctx := context.Background()
	for range 3 {
		for _, u := range []string{"@bridge_nobody:hs", "@bridge_flaky:hs", "@bridge_known:hs"} {
			res, err := q.QueryUserIDExists(ctx, &api.QueryUserIDExistsRequest{UserID: u})
			if err != nil || res.Exists != (u == "@bridge_known:hs") {
				t.Fatalf("user %s: %+v %v", u, res, err)
			}
		}
		res, err := q.QueryRoomAliasExists(ctx, &api.QueryRoomAliasExistsRequest{Alias: "#bridge_nothing:hs"})
		if err != nil || res.Exists {
			t.Fatalf("alias: %+v %v", res, err)
		}
	}
	want := map[string]int{
		"/_matrix/app/v1/users/@bridge_nobody:hs":  1,
		"/_matrix/app/v1/rooms/#bridge_nothing:hs": 1,
		"/_matrix/app/v1/users/@bridge_flaky:hs":   3,
		"/_matrix/app/v1/users/@bridge_known:hs":   3,
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(asked) != fmt.Sprint(want) {
		t.Fatalf("the service was asked %v, want %v", asked, want)
	}
}

// TestQueuesBadServices: a service answering first with a malformed body, then 500, gets
// the same transaction again each time and finally acknowledges it once, while another
// service that never answers in time and a third that always answers 500 wait on their
// own; /metrics shows each service's transactions, failures, queue depth and lag.
func TestQueuesBadServices(t *testing.T) {
	test.WithAllDatabases(t, func(t *testing.T, db *sqlutil.DB) {
		var mu sync.Mutex
		var goodTxns []string // transaction ID and body of each attempt
		answers := []string{"not json", "500"}
		good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body) // a short read shows as another body
			mu.Lock()
			defer mu.Unlock()
			goodTxns = append(goodTxns, r.URL.Path+" "+string(b))
			answer := "{}"
			if len(answers) > 0 {
				answer, answers = answers[0], answers[1:]
			}
			if answer == "500" {
				w.WriteHeader(http.StatusInternalServerError)
			}
			_, _ = w.Write([]byte(answer)) // the test's answer
		}))
		t.Cleanup(good.Close)
		stop := make(chan struct{})
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.ReadAll(r.Body) // read whole, so that the server sees the client give up
			select {                  // never answers before the homeserver gives up
			case <-r.Context().Done():
			case <-stop:
			}
		}))
		t.Cleanup(slow.Close)
		t.Cleanup(func() { close(stop) })
		broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusInternalServerError)
		}))
		t.Cleanup(broken.Close)

		ctx, cancel := context.WithCancel(context.Background())
		d, err := assql.Open(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		services := registrations(t, map[string]string{"good": good.URL, "slow": slow.URL, "broken": broken.URL})
		reg := prometheus.NewRegistry()
		logger := logrus.New()
		logger.SetOutput(io.Discard)
		q := NewQueues(Options{DB: d, Client: NewClient(200*time.Millisecond, false), Services: services,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: logrus.NewEntry(logger), Metrics: NewMetrics(reg)})
		err = db.WithTx(ctx, func(tx *sql.Tx) error {
			for _, as := range services {
				for i := range 3 {
					if err := d.Enqueue(ctx, tx, as.ID, storage.KindEvent, []byte(`{"event_id":"$`+strconv.Itoa(i)+`"}`)); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- q.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			<-done
		})
		q.Wake([]string{"good", "slow", "broken"})

		metrics := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		t.Cleanup(metrics.Close)
		want := map[string]string{
			`dendrite_appservice_transactions_total{outcome="sent",service="good"}`:     "1",
			`dendrite_appservice_transactions_total{outcome="failed",service="good"}`:   "2",
			`dendrite_appservice_events_sent_total{service="good"}`:                     "3",
			`dendrite_appservice_queued_items{service="good"}`:                          "0",
			`dendrite_appservice_lag_seconds{service="good"}`:                           "0",
			`dendrite_appservice_queued_items{service="slow"}`:                          "3",
			`dendrite_appservice_queued_items{service="broken"}`:                        "3",
			`dendrite_appservice_transactions_total{outcome="failed",service="slow"}`:   "",
			`dendrite_appservice_transactions_total{outcome="failed",service="broken"}`: "",
			`dendrite_appservice_lag_seconds{service="slow"}`:                           "",
			`dendrite_appservice_lag_seconds{service="broken"}`:                         "",
		}
		var got map[string]string
		deadline := time.Now().Add(60 * time.Second)
		for !metricsMatch(got, want) {
			if time.Now().After(deadline) {
				t.Fatalf("/metrics never showed %v; last:\n%v", want, got)
			}
			time.Sleep(20 * time.Millisecond)
			got = scrape(t, metrics.URL)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(goodTxns) != 3 || goodTxns[0] != goodTxns[1] || goodTxns[1] != goodTxns[2] {
			t.Fatalf("the retries were not the same transaction: %q", goodTxns)
		}
	})
}

// metricsMatch: every wanted series has the wanted value, or for "" a value above 0.
func metricsMatch(got, want map[string]string) bool {
	for k, v := range want {
		g, ok := got[k]
		if !ok {
			return false
		}
		if v == "" {
			if f, err := strconv.ParseFloat(g, 64); err != nil || f <= 0 {
				return false
			}
		} else if g != v {
			return false
		}
	}
	return true
}

var sample = regexp.MustCompile(`(?m)^(dendrite_appservice_[a-z_]+\{[^}]*\}) (\S+)$`)

// scrape GETs /metrics and returns the appservice series' values.
func scrape(t *testing.T, url string) map[string]string {
	t.Helper()
	res, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close() // nolint: errcheck // read-only
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, m := range sample.FindAllStringSubmatch(string(b), -1) {
		out[m[1]] = m[2]
	}
	return out
}
