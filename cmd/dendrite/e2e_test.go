package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"maunium.net/go/mautrix"

	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// binary is the dendrite binary built once for the package's tests.
var binary string

func TestMain(m *testing.M) {
	e2e.RunWithBinary(m, "dendrite", &binary)
}

// server is a dendrite monolith process started from the binary.
type server struct {
	t      testing.TB
	cmd    *exec.Cmd
	url    string
	config string
	// env is added to the process's environment (config overrides).
	env []string
	// args are added to the command line.
	args []string
	// addr is where the server listens, kept across restarts.
	addr string
	logs *logBuffer
}

// logBuffer is a server's output, safe to read while the process writes it.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

var _ e2e.Homeserver = (*server)(nil)

func startServer(t *testing.T, config string, env ...string) *server {
	t.Helper()
	s := &server{t: t, config: config, env: env}
	s.start(t)
	t.Cleanup(s.stop)
	return s
}

func (s *server) start(t testing.TB) {
	t.Helper()
	fresh := s.addr == ""
	if fresh {
		s.addr = e2e.FreeAddr(t)
	}
	addr := s.addr
	s.url, s.logs = "http://"+addr, &logBuffer{}
	s.cmd = exec.Command(binary, append([]string{"--config", s.config, "--http-bind-address", addr}, s.args...)...)
	s.cmd.Stdout, s.cmd.Stderr = s.logs, s.logs
	s.cmd.Env = append(os.Environ(), s.env...)
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// A monolith on PostgreSQL migrates thirteen components' schemas first; with other test
	// packages' servers on the same two cores that took over 30 s in CI.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := http.Get(s.url + "/_matrix/client/versions")
		if err == nil {
			_ = resp.Body.Close() // only the status matters
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if fresh && strings.Contains(s.logs.String(), addr+": bind: address already in use") {
			// Another test's server took the free port between FreeAddr and the bind: the
			// process has exited; start again on another port.
			_ = s.cmd.Wait() // exit status 1, logged above
			s.addr = ""
			s.start(t)
			return
		}
		if time.Now().After(deadline) {
			s.stop()
			t.Fatalf("server did not come up: %v\n%s", err, s.logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// URL implements e2e.Homeserver.
func (s *server) URL() string { return s.url }

// Restart implements e2e.Homeserver: the process stops on SIGTERM and starts again.
func (s *server) Restart(t *testing.T) {
	t.Helper()
	s.stop()
	s.start(t)
}

// stop sends SIGTERM and waits for a clean exit. A server still running 20 s later gets
// SIGQUIT, on which the Go runtime writes every goroutine's stack to stderr and exits: the
// failure then shows what the shutdown was waiting for.
func (s *server) stop() {
	if s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM) // the process may already be gone
	done := make(chan error, 1)
	go func() { done <- s.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			s.t.Errorf("server exited with %v\n%s", err, s.logs)
		}
	case <-time.After(20 * time.Second):
		s.t.Errorf("server did not stop on SIGTERM within 20 s; its output and goroutine dump (SIGQUIT):\n%s", s.dump(done))
	}
}

// dump sends SIGQUIT to a server that ignored SIGTERM and returns its output once it has
// exited (done reports the exit), with the goroutine dump the Go runtime writes on SIGQUIT
// at its end. A process still running 20 s after SIGQUIT is killed.
func (s *server) dump(done <-chan error) string {
	_ = s.cmd.Process.Signal(syscall.SIGQUIT) // the process may have exited just now
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill() // not even SIGQUIT stopped it; the output so far is all there is
		<-done
	}
	return s.logs.String()
}

// TestMonolithStory drives two users through a room's life with a real Matrix client, with a
// restart of the server in the middle: nothing is lost or repeated.
func TestMonolithStory(t *testing.T) {
	e2e.Story(t, startServer(t, e2e.WriteConfig(t, t.TempDir())))
}

// TestMonolithBadInput checks the spec's errors for bad requests.
// TestMonolithSlidingSync drives simplified sliding sync (MSC4186) on SQLite, with a restart
// of the server in the middle of a connection.
func TestMonolithSlidingSync(t *testing.T) {
	e2e.SlidingSync(t, startServer(t, e2e.WriteConfig(t, t.TempDir())))
}

// TestMonolithEDUs covers typing, receipts, presence and send-to-device (issue 5).
func TestMonolithEDUs(t *testing.T) {
	e2e.EDUs(t, startServer(t, e2e.WriteConfig(t, t.TempDir())))
}

// TestMonolithAccountSecurity covers device deletion and password changes behind the password.
func TestMonolithAccountSecurity(t *testing.T) {
	e2e.AccountSecurity(t, startServer(t, e2e.WriteConfig(t, t.TempDir())).URL())
}

func TestMonolithBadInput(t *testing.T) {
	e2e.BadInput(t, startServer(t, e2e.WriteConfig(t, t.TempDir())).URL())
}

// TestMonolithOnKafkaStory runs the story with the monolith's log on a Kafka-protocol broker
// (global.log.kind: kafka, set through the environment), which outlives the server's restart.
func TestMonolithOnKafkaStory(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	dataDir := t.TempDir()
	e2e.Story(t, startServer(t, e2e.WriteConfig(t, dataDir),
		"DENDRITE_GLOBAL_LOG_KIND=kafka", "DENDRITE_GLOBAL_LOG_KAFKA_BROKERS="+strings.Join(cluster.ListenAddrs(), ",")))
	if _, err := os.Stat(filepath.Join(dataDir, "eventlog.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the embedded log was opened although the log is Kafka: %v", err)
	}
}

// TestMonolithRoomFeatures checks createRoom's options, redaction, profiles in member
// events, kicks and forgetting.
func TestMonolithRoomFeatures(t *testing.T) {
	e2e.RoomFeatures(t, startServer(t, e2e.WriteConfig(t, t.TempDir())).URL())
}

// TestCreateAccountCommand creates an account with the create-account command (password on
// standard input) before the server starts; the account then logs in.
func TestCreateAccountCommand(t *testing.T) {
	config := e2e.WriteConfig(t, t.TempDir())
	cmd := exec.Command(binary, "create-account", "--config", config, "--username", "carol")
	cmd.Stdin = strings.NewReader("carols-password\n")
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "@carol:e2e.test") {
		t.Fatalf("create-account: %v\n%s", err, out)
	}
	s := startServer(t, config)
	c := e2e.Client(t, s.URL())
	_, err = c.Login(context.Background(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "carol"}, Password: "carols-password"})
	if err != nil {
		t.Fatalf("login with the created account: %v", err)
	}
}

// TestMonolithStateContent checks that auth-relevant state content from clients is
// type-checked (400 M_BAD_JSON) and that users_default cannot be raised above the sender.
func TestMonolithStateContent(t *testing.T) {
	e2e.StateContent(t, startServer(t, e2e.WriteConfig(t, t.TempDir())).URL())
}

// TestMonolithDirectory checks room aliases and the published room directory.
func TestMonolithDirectory(t *testing.T) {
	e2e.Directory(t, startServer(t, e2e.WriteConfig(t, t.TempDir())).URL())
}

// TestMonolithEveryday runs the everyday client feature stories (issue 11): room tags, the
// user directory, relations and threads, spaces, room summaries, restricted joins,
// knocking and account erasure.
func TestMonolithEveryday(t *testing.T) {
	url := startServer(t, e2e.WriteConfig(t, t.TempDir())).URL()
	t.Run("tags", func(t *testing.T) { e2e.Tags(t, url) })
	t.Run("user directory", func(t *testing.T) { e2e.UserDirectory(t, url) })
	t.Run("relations", func(t *testing.T) { e2e.Relations(t, url) })
	t.Run("spaces", func(t *testing.T) { e2e.Spaces(t, url) })
	t.Run("knocking", func(t *testing.T) { e2e.Knocking(t, url) })
	t.Run("upgrades", func(t *testing.T) { e2e.Upgrades(t, url) })
	t.Run("erasure", func(t *testing.T) { e2e.Erasure(t, url) })
}

// TestMonolithPushCounts covers the push reader: rules, counts in /sync, receipts and
// /notifications, on SQLite and on PostgreSQL.
func TestMonolithPushCounts(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) {
		e2e.PushCounts(t, startServer(t, e2e.WriteConfig(t, t.TempDir())).URL())
	})
	t.Run("postgres", func(t *testing.T) {
		e2e.PushCounts(t, startServer(t, e2e.WriteConfig(t, t.TempDir()),
			"DENDRITE_GLOBAL_DATABASE_CONNECTION_STRING="+test.PostgresDSN(t)).URL())
	})
}

// TestMonolithPushDelivery covers delivery to a push gateway, with a restart of the
// server while the gateway is down, on SQLite and on PostgreSQL.
func TestMonolithPushDelivery(t *testing.T) {
	tls := "DENDRITE_PUSH_SERVER_DISABLE_TLS_VALIDATION=true"
	t.Run("sqlite", func(t *testing.T) {
		e2e.PushDelivery(t, startServer(t, e2e.WriteConfig(t, t.TempDir()), tls))
	})
	t.Run("postgres", func(t *testing.T) {
		e2e.PushDelivery(t, startServer(t, e2e.WriteConfig(t, t.TempDir()), tls,
			"DENDRITE_GLOBAL_DATABASE_CONNECTION_STRING="+test.PostgresDSN(t)))
	})
}

// TestMonolithAppServiceBridge runs a bridge written with mautrix-go's appservice package
// against the monolith, on SQLite and on PostgreSQL: ghosts, transactions, ephemeral
// events, an alias through the user query, and a 30-second outage of the bridge during 200
// messages, after which it has every message exactly once, in order.
func TestMonolithAppServiceBridge(t *testing.T) {
	for _, engine := range []string{"sqlite", "postgres"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			config := e2e.WriteConfig(t, t.TempDir())
			bridge := e2e.AddBridge(t, config)
			var env []string
			if engine == "postgres" {
				env = append(env, "DENDRITE_GLOBAL_DATABASE_CONNECTION_STRING="+test.PostgresDSN(t))
			}
			e2e.AppServiceBridge(t, startServer(t, config, env...), bridge, 30*time.Second)
		})
	}
}
