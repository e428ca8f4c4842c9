package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// TestPolylithBrokerWipeToDevice kills the in-memory broker with SIGKILL while five
// senders send 60 to-device messages each to one device; devcluster starts it again empty,
// so every topic and record is gone. Each sender retries a request with its transaction ID
// until it is acknowledged. With no manual step, the recipient's /sync then delivers every
// acknowledged message exactly once (a marker sent after them all shows nothing else
// comes): a request is acknowledged only once the eduserver stored its messages in its
// outbox, and the readers recover from there what the wiped log lost. The test logs how
// long sends took to flow again.
func TestPolylithBrokerWipeToDevice(t *testing.T) {
	t.Parallel()
	d := startCluster(t, e2e.WriteConfig(t, t.TempDir()), 1, "--broker-in-memory")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	bob := e2e.Register(t, d.URL(), "wipetodevicebob")
	var senders []*mautrix.Client
	for i := range 5 {
		senders = append(senders, e2e.Register(t, d.URL(), fmt.Sprintf("wipetodevice%d", i)))
	}
	send := func(c *mautrix.Client, txnID, body string) error {
		for ctx.Err() == nil {
			if code, err := putToDevice(ctx, d.URL(), c.AccessToken, txnID, bob, body); err == nil && code == http.StatusOK {
				return nil
			}
			time.Sleep(50 * time.Millisecond)
		}
		return fmt.Errorf("%s never acknowledged: %w", txnID, ctx.Err())
	}
	const perSender = 60
	var acked atomic.Int32
	errs := make([]error, len(senders))
	var wg sync.WaitGroup
	for i, c := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range perSender {
				if errs[i] = send(c, fmt.Sprintf("txn-%03d", n), fmt.Sprintf("s%d-%03d", i, n)); errs[i] != nil {
					return
				}
				acked.Add(1)
			}
		}()
	}
	for acked.Load() < 100 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	st, _ := d.status()
	killed := time.Now()
	signalProcess(t, st.Broker, syscall.SIGKILL)
	atKill := acked.Load()
	for acked.Load() < atKill+10 && ctx.Err() == nil {
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("broker wiped after %d acknowledged to-device requests; 10 more acknowledged %v later", atKill, time.Since(killed).Round(time.Millisecond))
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	d.waitReady(t, func(st clusterStatus) bool { return st.Broker.Starts > 1 })
	if err := send(senders[0], "marker", "marker"); err != nil {
		t.Fatal(err)
	}

	seen := map[string]int{}
	p := &e2e.Poller{C: bob}
	p.Until(t, 3*time.Minute, "the marker after every to-device message", func(res *mautrix.RespSync) bool {
		for _, ev := range res.ToDevice.Events {
			if b, ok := ev.Content.Raw["body"].(string); ok {
				seen[b]++
			}
		}
		return seen["marker"] > 0
	})
	for i := range senders {
		for n := range perSender {
			if body := fmt.Sprintf("s%d-%03d", i, n); seen[body] != 1 {
				t.Errorf("acknowledged to-device message %s delivered %d times", body, seen[body])
			}
		}
	}
	if len(seen) != len(senders)*perSender+1 {
		t.Errorf("delivered %d distinct messages, %d were sent", len(seen), len(senders)*perSender+1)
	}
}

// toDeviceClient bounds each attempt: longer than edu_server.input_wait_timeout, after
// which the server answers 504 anyway.
var toDeviceClient = &http.Client{Timeout: 45 * time.Second}

// putToDevice sends PUT /sendToDevice/org.example.wipe/{txnID} with one message for every
// device of target, and returns the status.
func putToDevice(ctx context.Context, baseURL, token, txnID string, target *mautrix.Client, body string) (int, error) {
	payload, err := json.Marshal(map[string]any{"messages": map[string]any{target.UserID.String(): map[string]any{"*": map[string]string{"body": body}}}})
	if err != nil {
		return 0, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, baseURL+"/_matrix/client/v3/sendToDevice/org.example.wipe/"+txnID, bytes.NewReader(payload))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := toDeviceClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer res.Body.Close() // nolint: errcheck // only the status matters
	return res.StatusCode, nil
}
