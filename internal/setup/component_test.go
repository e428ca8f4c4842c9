package setup

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/freeport"
	ihttp "github.com/matrix-org/dendrite/internal/inthttp"
	uapi "github.com/matrix-org/dendrite/userapi/api"
	uinthttp "github.com/matrix-org/dendrite/userapi/inthttp"
)

// TestTableIsConfigComponents: every component the config knows has a row, and no more.
func TestTableIsConfigComponents(t *testing.T) {
	var names []string
	for _, c := range components {
		names = append(names, c.name)
	}
	slices.Sort(names)
	want := slices.Sorted(slices.Values(config.Components))
	if !slices.Equal(names, want) {
		t.Fatalf("wiring table has %v, config.Components %v", names, want)
	}
}

// freePort is a loopback port for a component to bind later, reserved for the test
// process (internal/freeport: not from the ephemeral range an outgoing connection could
// take it from first).
func freePort(t *testing.T) int {
	t.Helper()
	port, err := freeport.Port()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func status(url string) int {
	res, err := http.Get(url)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, res.Body) // only the status matters
	_ = res.Body.Close()
	return res.StatusCode
}

// TestComponentWaitsForBroker starts a polylith userapi while no broker runs: it stays up,
// live but not ready, until the broker appears, then serves its internal API.
func TestComponentWaitsForBroker(t *testing.T) {
	brokerPort, apiPort := freePort(t), freePort(t)
	dir := t.TempDir()
	yaml := fmt.Sprintf(`global:
  server_name: poly.test
  data_dir: %s
  log:
    kind: kafka
    partitions: 2
    kafka:
      brokers: ["127.0.0.1:%d"]
user_api:
  bcrypt_cost: 4
`, dir, brokerPort)
	cfg, err := config.LoadBytes([]byte(yaml), nil)
	if err != nil {
		t.Fatal(err)
	}
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	apiAddr := fmt.Sprintf("127.0.0.1:%d", apiPort)
	go func() {
		done <- RunComponent(ctx, cfg, logger, ComponentOptions{Name: "userapi", InternalListen: apiAddr})
	}()
	base := "http://" + apiAddr
	waitStatus := func(path string, want int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for status(base+path) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s never answered %d", path, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitStatus("/health", http.StatusOK)
	if got := status(base + "/ready"); got != http.StatusServiceUnavailable {
		t.Fatalf("/ready without a broker: %d", got)
	}
	if got := status(base + "/metrics"); got != http.StatusOK {
		t.Fatalf("/metrics without a broker: %d", got)
	}
	users := uinthttp.NewClient(base, ihttp.ClientOptions{})
	if _, err := users.QueryLocalpartAvailable(ctx, &uapi.QueryLocalpartAvailableRequest{Localpart: "alice"}); err == nil {
		t.Fatal("internal API answered before the component was built")
	}

	broker, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.Ports(brokerPort))
	if err != nil {
		t.Fatal(err)
	}
	defer broker.Close()
	waitStatus("/ready", http.StatusOK)
	res, err := users.QueryLocalpartAvailable(ctx, &uapi.QueryLocalpartAvailableRequest{Localpart: "alice"})
	if err != nil || !res.Available {
		t.Fatalf("userapi over HTTP: %+v %v", res, err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("RunComponent: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("RunComponent did not return after cancel")
	}
}

func TestComponentRejects(t *testing.T) {
	cfg := config.Defaults()
	logger := logrus.New()
	logger.SetOutput(io.Discard)
	for name, opts := range map[string]ComponentOptions{
		"unknown name":       {Name: "nope"},
		"embedded log":       {Name: "userapi"},
		"shard of userapi":   {Name: "userapi", Shard: 1},
		"shard out of range": {Name: "roomserver", Shard: 1},
	} {
		t.Run(name, func(t *testing.T) {
			c := *cfg
			if name != "embedded log" {
				c.Global.Log.Kind = "kafka"
			}
			if err := RunComponent(context.Background(), &c, logger, opts); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
