package main

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/matrix-org/dendrite/internal/config"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// devclusterBinary is devcluster and dendriteBinary the monolith binary its processes run,
// each built once for the package's tests (started with --dendrite, a cluster does not
// build its own).
var devclusterBinary, dendriteBinary string

func TestMain(m *testing.M) {
	e2e.RunWithBinaries(m, e2e.Binary{Name: "devcluster", Package: ".", Path: &devclusterBinary},
		e2e.Binary{Name: "dendrite", Package: "../dendrite", Path: &dendriteBinary})
}

// lockedBuffer collects a process's output while tests read it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// devcluster is a running `devcluster` process: the polylith as e2e.Homeserver.
type devcluster struct {
	t    *testing.T
	cmd  *exec.Cmd
	url  string
	logs *lockedBuffer
	done chan error
}

var _ e2e.Homeserver = (*devcluster)(nil)

// startCluster runs devcluster with the command line outside harnesses use, extra flags,
// and --dendrite with the binary TestMain built.
func startCluster(t *testing.T, config string, shards int, extra ...string) *devcluster {
	t.Helper()
	return startClusterAsHarness(t, config, shards, append([]string{"--dendrite", dendriteBinary}, extra...)...)
}

// startClusterAsHarness runs devcluster with exactly the command line outside harnesses
// use (devcluster then builds the monolith binary itself), and extra flags.
func startClusterAsHarness(t *testing.T, config string, shards int, extra ...string) *devcluster {
	t.Helper()
	addr := e2e.FreeAddr(t)
	d := &devcluster{t: t, url: "http://" + addr, logs: &lockedBuffer{}, done: make(chan error, 1)}
	args := append([]string{"--config", config, "--http-bind-address", addr, "--roomserver-shards", strconv.Itoa(shards)}, extra...)
	d.cmd = exec.Command(devclusterBinary, args...)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(d.stop)
	d.waitReady(t, func(st clusterStatus) bool { return true })
	return d
}

// status is /_devcluster/status; ok is false while devcluster does not answer.
func (d *devcluster) status() (st clusterStatus, ok bool) {
	res, err := http.Get(d.url + "/_devcluster/status")
	if err != nil {
		return st, false
	}
	defer res.Body.Close() // nolint: errcheck // read-only body
	return st, json.NewDecoder(res.Body).Decode(&st) == nil
}

// waitReady waits until every process is ready and cond holds.
func (d *devcluster) waitReady(t *testing.T, cond func(clusterStatus) bool) clusterStatus {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		st, ok := d.status()
		if ok && st.Ready && cond(st) {
			return st
		}
		select {
		case err := <-d.done:
			d.done <- err
			t.Fatalf("devcluster exited: %v\n%s", err, d.logs)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("devcluster not ready: %+v\n%s", st, d.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// URL implements e2e.Homeserver.
func (d *devcluster) URL() string { return d.url }

// Restart implements e2e.Homeserver: every component process gets SIGTERM and devcluster's
// supervisor starts it again; broker and database keep running, as in a rolling restart.
func (d *devcluster) Restart(t *testing.T) {
	t.Helper()
	before := d.waitReady(t, func(clusterStatus) bool { return true })
	starts := map[string]int{}
	for _, p := range before.Processes {
		starts[p.Name] = p.Starts
		signalProcess(t, p, syscall.SIGTERM)
	}
	d.waitReady(t, func(st clusterStatus) bool {
		for _, p := range st.Processes {
			if p.Starts <= starts[p.Name] {
				return false
			}
		}
		return true
	})
}

// signalProcess sends sig to one component process. A PID of 0 or less would signal the test's own
// process group (and the go command and CI script in it), so it fails the test instead.
func signalProcess(t *testing.T, p procStatus, sig syscall.Signal) {
	t.Helper()
	if p.PID <= 0 {
		t.Fatalf("%s has no running process to signal: %+v", p.Name, p)
	}
	if err := syscall.Kill(p.PID, sig); err != nil {
		t.Fatalf("signal %s (pid %d): %v", p.Name, p.PID, err)
	}
}

// stop sends SIGTERM to devcluster and checks that it exits cleanly with nothing left.
func (d *devcluster) stop() {
	st, _ := d.status()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		d.t.Errorf("signal devcluster: %v", err)
	}
	select {
	case err := <-d.done:
		d.done <- err
		if err != nil {
			d.t.Errorf("devcluster exited with %v\n%s", err, d.logs)
		}
	case <-time.After(40 * time.Second):
		_ = d.cmd.Process.Kill() // it ignored SIGTERM; the test already failed
		d.t.Errorf("devcluster did not stop on SIGTERM\n%s", d.logs)
	}
	for _, p := range st.Processes {
		if p.PID != 0 && syscall.Kill(p.PID, 0) == nil {
			d.t.Errorf("%s (pid %d) still runs after devcluster stopped", p.Name, p.PID)
		}
	}
}

// TestPolylithStory runs the monolith's story through devcluster's front proxy against
// every component in its own process, the roomserver as two shards on Kafka and PostgreSQL,
// with every component restarted in the middle. It starts devcluster exactly as outside
// harnesses do, so devcluster builds the monolith itself.
func TestPolylithStory(t *testing.T) {
	t.Parallel()
	d := startClusterAsHarness(t, e2e.WriteConfig(t, t.TempDir()), 2)
	e2e.Story(t, d)
}

// TestPolylithSlidingSync drives simplified sliding sync (MSC4186) through the front proxy to
// the syncapi process on PostgreSQL, with every process restarted in the middle of a
// connection.
func TestPolylithSlidingSync(t *testing.T) {
	t.Parallel()
	e2e.SlidingSync(t, startCluster(t, e2e.WriteConfig(t, t.TempDir()), 2))
}

// TestPolylithEDUs covers typing, receipts, presence and send-to-device through the
// eduserver, receiptserver and presenceserver processes, with every process restarted
// between a to-device send and its delivery.
func TestPolylithEDUs(t *testing.T) {
	t.Parallel()
	e2e.EDUs(t, startCluster(t, e2e.WriteConfig(t, t.TempDir()), 2))
}

// TestPolylithBadInput checks the spec's errors for bad requests through the polylith: Matrix
// errors raised behind internal HTTP reach the client with their code and status.
func TestPolylithBadInput(t *testing.T) {
	t.Parallel()
	e2e.BadInput(t, startCluster(t, e2e.WriteConfig(t, t.TempDir()), 2).URL())
}

// process is the running process with the given name.
func (d *devcluster) process(t *testing.T, name string) procStatus {
	t.Helper()
	st, ok := d.status()
	if !ok {
		t.Fatal("devcluster does not answer")
	}
	for _, p := range st.Processes {
		if p.Name == name && p.PID != 0 {
			return p
		}
	}
	t.Fatalf("no running %s in %+v", name, st)
	return procStatus{}
}

// TestPolylithDirectory runs the aliases and published directory story through the
// polylith: aliases live on the roomserver shard their hash picks, rooms' visibility on
// the room's shard.
func TestPolylithDirectory(t *testing.T) {
	t.Parallel()
	e2e.Directory(t, startCluster(t, e2e.WriteConfig(t, t.TempDir()), 2).URL())
}

// TestPolylithEveryday runs the everyday client feature stories through the polylith's
// proxy: tags, spaces, knocking and upgrades in the client API, the user directory,
// relations and threads in the sync API, account erasure (the sync API asking the
// userapi process over internal HTTP), and a peek ended by /leave (the client API asking
// the sync API process over internal HTTP).
func TestPolylithEveryday(t *testing.T) {
	t.Parallel()
	url := startCluster(t, e2e.WriteConfig(t, t.TempDir()), 2).URL()
	t.Run("tags", func(t *testing.T) { e2e.Tags(t, url) })
	t.Run("user directory", func(t *testing.T) { e2e.UserDirectory(t, url) })
	t.Run("relations", func(t *testing.T) { e2e.Relations(t, url) })
	t.Run("spaces", func(t *testing.T) { e2e.Spaces(t, url) })
	t.Run("knocking", func(t *testing.T) { e2e.Knocking(t, url) })
	t.Run("upgrades", func(t *testing.T) { e2e.Upgrades(t, url) })
	t.Run("erasure", func(t *testing.T) { e2e.Erasure(t, url) })
	t.Run("peek ended by leave", func(t *testing.T) { e2e.PeekLeave(t, url) })
}

// TestPolylithSearch runs the /search story through the polylith's proxy: the searchapi
// process indexes OutputRoomEvent from Kafka and judges visibility through the two
// roomserver shards' internal APIs.
func TestPolylithSearch(t *testing.T) {
	t.Parallel()
	e2e.Search(t, startCluster(t, e2e.WriteConfig(t, t.TempDir()), 2).URL())
}

// TestPolylithKeys runs the end-to-end key, device-list and cross-signing stories through
// the polylith (two roomserver shards): keys in the userapi process, /keys/changes and
// device_lists from the syncapi process, key changes over Kafka between them.
func TestPolylithKeys(t *testing.T) {
	t.Parallel()
	base := startCluster(t, e2e.WriteConfig(t, t.TempDir()), 2).URL()
	t.Run("keys", func(t *testing.T) { e2e.Keys(t, base) })
	t.Run("device lists", func(t *testing.T) { e2e.DeviceLists(t, base) })
	t.Run("cross-signing", func(t *testing.T) { e2e.CrossSigning(t, base) })
}

// TestPolylithPush runs the push stories through the polylith: the pushserver process
// reads the logs, serves /notifications and /pushers behind the proxy, and delivers to a
// push gateway across a restart of every process while the gateway is down.
func TestPolylithPush(t *testing.T) {
	t.Parallel()
	config := e2e.WriteConfig(t, t.TempDir())
	f, err := os.OpenFile(config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = f.WriteString("push_server:\n  disable_tls_validation: true\n"); err != nil {
		t.Fatal(err)
	}
	if err = f.Close(); err != nil {
		t.Fatal(err)
	}
	d := startCluster(t, config, 2)
	t.Run("counts", func(t *testing.T) { e2e.PushCounts(t, d.URL()) })
	t.Run("delivery", func(t *testing.T) { e2e.PushDelivery(t, d) })
}

// TestPolylithMedia runs the media story through devcluster's front proxy to the mediaapi
// process on PostgreSQL: an upload, a byte-identical download through the authenticated
// endpoint, and a thumbnail of every default size.
func TestPolylithMedia(t *testing.T) {
	t.Parallel()
	e2e.Media(t, startCluster(t, e2e.WriteConfig(t, t.TempDir()), 1).URL(), config.Defaults().MediaAPI.ThumbnailSizes)
}

// TestPolylithAppServiceBridge runs the mautrix-go bridge through the polylith: the
// appservice process reads the logs and delivers to the bridge, also after a short outage.
func TestPolylithAppServiceBridge(t *testing.T) {
	t.Parallel()
	cfg := e2e.WriteConfig(t, t.TempDir())
	bridge := e2e.AddBridge(t, cfg)
	e2e.AppServiceBridge(t, startCluster(t, cfg, 1), bridge, 5*time.Second)
}

// TestStatusStorage checks what /_devcluster/status tells a harness about storage
// (scripts/soak.sh measures with it): the PostgreSQL server's PID, the DSN of the database
// that holds the components' tables, and the broker's log directory.
func TestStatusStorage(t *testing.T) {
	t.Parallel()
	d := startCluster(t, e2e.WriteConfig(t, t.TempDir()), 2)
	st, ok := d.status()
	if !ok {
		t.Fatal("devcluster does not answer")
	}
	comm, err := os.ReadFile("/proc/" + strconv.Itoa(st.Postgres.PID) + "/comm")
	if err != nil || strings.TrimSpace(string(comm)) != "postgres" {
		t.Fatalf("postgres pid %d is not the server: %q, %v", st.Postgres.PID, comm, err)
	}
	db, err := sql.Open("postgres", st.Postgres.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close() // nolint: errcheck // read-only
	var tables int
	if err = db.QueryRow(`SELECT count(*) FROM pg_tables WHERE tablename LIKE 'roomserver\_%'`).Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables == 0 {
		t.Fatalf("no roomserver tables in %s", st.Postgres.DSN)
	}
	if entries, err := os.ReadDir(st.Broker.Data); err != nil || len(entries) == 0 {
		t.Fatalf("broker log directory %q: %d entries, %v", st.Broker.Data, len(entries), err)
	}
}
