package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

var (
	benchRemoteUsers = flag.Int("remote-users", 200, "BenchmarkRemoteKeysQuery: users (2 devices each) on B queried from A")
	benchWarmQueries = flag.Int("warm-queries", 20, "BenchmarkRemoteKeysQuery: cached queries after each cold one")
	benchFanRooms    = flag.Int("fanout-rooms", 10, "BenchmarkDeviceListFanOut: rooms of the user whose device list changes (full size: 200)")
	benchFanUsers    = flag.Int("fanout-users", 25, "BenchmarkDeviceListFanOut: local room-mates, each syncing (full size: 500)")
	benchFanRemote   = flag.Int("fanout-remote", 3, "BenchmarkDeviceListFanOut: room-mates on server B, each syncing there")
)

// benchTransport is shared by the benchmarks' clients: hundreds of long-polls at once
// need as many connections, kept between requests.
var benchTransport = &http.Transport{MaxIdleConnsPerHost: 2000}

// reportRanks reports the p50 and p99 of lat by nearest rank (with few samples p99 is the
// slowest, not an interpolation below it).
func reportRanks(b *testing.B, lat []time.Duration, prefix string) {
	slices.Sort(lat)
	rank := func(q float64) float64 {
		i := max(int(math.Ceil(q*float64(len(lat))))-1, 0)
		return float64(lat[i].Microseconds()) / 1000
	}
	b.ReportMetric(rank(0.5), prefix+"p50-ms")
	b.ReportMetric(rank(0.99), prefix+"p99-ms")
}

// cpuSeconds is the CPU time (user and system) a process has used, from /proc/<pid>/stat.
func cpuSeconds(b testing.TB, pid int) float64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name (in parentheses, which may hold spaces): utime and
	// stime are the 12th and 13th, in clock ticks (100 per second on Linux).
	fields := strings.Fields(string(raw[bytes.LastIndexByte(raw, ')')+1:]))
	utime, _ := strconv.ParseFloat(fields[11], 64)
	stime, _ := strconv.ParseFloat(fields[12], 64)
	return (utime + stime) / 100
}

// benchLogin logs a new device of an account registered by e2e.Register in.
func benchLogin(b testing.TB, baseURL, name string) *mautrix.Client {
	b.Helper()
	c := e2e.Client(b, baseURL)
	c.Client = &http.Client{Timeout: 2 * time.Minute, Transport: benchTransport}
	res, err := c.Login(context.Background(), &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: name}, Password: "password-" + name})
	if err != nil {
		b.Fatalf("login %s: %v", name, err)
	}
	c.UserID, c.AccessToken, c.DeviceID = res.UserID, res.AccessToken, res.DeviceID
	return c
}

// benchUploadDeviceKeys uploads signed device keys for the client's device.
func benchUploadDeviceKeys(b testing.TB, c *mautrix.Client) {
	b.Helper()
	dk := test.NewDeviceKeys(b, c.UserID.String(), c.DeviceID.String())
	body := map[string]any{"device_keys": dk.JSON(b)}
	if _, err := c.MakeRequest(context.Background(), http.MethodPost, c.BuildClientURL("v3", "keys", "upload"), body, nil); err != nil {
		b.Fatalf("upload keys of %s: %v", c.UserID, err)
	}
}

// usersWithDevices registers n users named <prefix><i> on the server at url, each with two
// devices (registration and a login) holding device keys, 8 users at a time.
func usersWithDevices(b testing.TB, url, prefix string, n int) []id.UserID {
	b.Helper()
	users := make([]id.UserID, n)
	var g errgroup.Group
	g.SetLimit(8)
	for i := range users {
		g.Go(func() error {
			name := fmt.Sprintf("%s%d", prefix, i)
			first := e2e.Register(b, url, name)
			benchUploadDeviceKeys(b, first)
			benchUploadDeviceKeys(b, benchLogin(b, url, name))
			users[i] = first.UserID
			return nil
		})
	}
	_ = g.Wait() // the calls fail the benchmark themselves
	return users
}

// BenchmarkRemoteKeysQuery: two monolith processes over loopback TLS; B holds 200 users
// (-remote-users) with 2 devices each. Each iteration starts a new server A, whose user
// sends one POST /keys/query for all of them (cold: A has no copy of their device lists
// and fetches each through B's /user/devices), then 20 more (-warm-queries; warm: answered
// from A's copy). Every answer must hold every device and no failures. Reported: cold and
// warm p50/p99, and A's and B's peak RSS (VmHWM). Run with e.g. -benchtime 3x.
func BenchmarkRemoteKeysQuery(b *testing.B) {
	n := *benchRemoteUsers
	benchEngines(b, func(b *testing.B, start func(testing.TB) *fedServer) {
		sb := start(b)
		setup := time.Now()
		users := usersWithDevices(b, sb.URL(), "remote", n)
		b.Logf("%d users with 2 devices each on B in %s", n, time.Since(setup).Round(time.Millisecond))
		req := &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{}, Timeout: 30000}
		for _, u := range users {
			req.DeviceKeys[u] = mautrix.DeviceIDList{}
		}
		query := func(c *mautrix.Client) time.Duration {
			begin := time.Now()
			res, err := c.QueryKeys(context.Background(), req)
			took := time.Since(begin)
			if err != nil {
				b.Fatal(err)
			}
			devices := 0
			for _, d := range res.DeviceKeys {
				devices += len(d)
			}
			if len(res.Failures) > 0 || devices != 2*n {
				b.Fatalf("%d devices of %d, failures %v", devices, 2*n, res.Failures)
			}
			return took
		}
		var cold, warm []time.Duration
		var peakA float64
		b.ResetTimer()
		for i := range b.N {
			b.StopTimer()
			sa := start(b)
			alice := benchClient(b, sa.URL(), fmt.Sprint("alice", i))
			b.StartTimer()
			cold = append(cold, query(alice))
			for range *benchWarmQueries {
				warm = append(warm, query(alice))
			}
			b.StopTimer()
			peak, _ := procStatus(b, sa.cmd.Process.Pid)
			peakA = max(peakA, peak)
			sa.stop()
			b.StartTimer()
		}
		b.StopTimer()
		peakB, _ := procStatus(b, sb.cmd.Process.Pid)
		reportRanks(b, cold, "cold-")
		if len(warm) > 0 {
			reportRanks(b, warm, "warm-")
		}
		b.ReportMetric(peakA, "A-rss-peak-MiB")
		b.ReportMetric(peakB, "B-rss-peak-MiB")
		b.ReportMetric(0, "ns/op")
	})
}

// listWatcher long-polls /sync for one user and records when a response's
// device_lists.changed names the watched user.
type listWatcher struct {
	mu    sync.Mutex
	seen  []time.Time
	ready chan struct{}
}

// watchDeviceList starts a watcher, which ends (wg.Done) once ctx is cancelled.
func watchDeviceList(ctx context.Context, wg *sync.WaitGroup, c *mautrix.Client, of id.UserID) *listWatcher {
	w := &listWatcher{ready: make(chan struct{})}
	wg.Add(1)
	go func() {
		defer wg.Done()
		since := ""
		for ctx.Err() == nil {
			res, err := c.SyncRequest(ctx, 30000, since, `{"room":{"timeline":{"limit":1}},"presence":{"types":[]}}`, false, "")
			if err != nil {
				continue
			}
			at := time.Now()
			if since != "" && slices.Contains(res.DeviceLists.Changed, of) {
				w.mu.Lock()
				w.seen = append(w.seen, at)
				w.mu.Unlock()
			}
			if since == "" {
				close(w.ready)
			}
			since = res.NextBatch
		}
	}()
	return w
}

// after returns when the watcher first saw the change at or after t.
func (w *listWatcher) after(t time.Time) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, at := range w.seen {
		if !at.Before(t) {
			return at, true
		}
	}
	return time.Time{}, false
}

// waitAll waits until every watcher saw the change made at begin and returns each one's delay.
func waitAll(b *testing.B, ws []*listWatcher, begin time.Time, what string) []time.Duration {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	lat := make([]time.Duration, len(ws))
	for i, w := range ws {
		for {
			at, ok := w.after(begin)
			if ok {
				lat[i] = at.Sub(begin)
				break
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: watcher %d of %d has not seen the change after 5m", what, i, len(ws))
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return lat
}

// fanOutRooms registers users (prefix, n) on the server at url and joins user i to
// rooms[i % len(rooms)] through via, 8 at a time.
func fanOutRooms(b *testing.B, url, prefix string, n int, rooms []id.RoomID, via string) []*mautrix.Client {
	b.Helper()
	users := make([]*mautrix.Client, n)
	var g errgroup.Group
	g.SetLimit(8)
	for i := range users {
		g.Go(func() error {
			users[i] = benchClient(b, url, fmt.Sprintf("%s%d", prefix, i))
			users[i].Client.Transport = benchTransport
			_, err := users[i].JoinRoom(context.Background(), rooms[i%len(rooms)].String(), &mautrix.ReqJoinRoom{Via: []string{via}})
			return err
		})
	}
	if err := g.Wait(); err != nil {
		b.Fatal(err)
	}
	return users
}

// BenchmarkDeviceListFanOut: alice on server A is in 10 rooms (-fanout-rooms) with 25
// other local users (-fanout-users; user i joined room i mod rooms) and 3 users of server B
// (-fanout-remote), every one of them long-polling /sync. Each iteration logs a new device
// of alice in and times, for every room-mate, the delay until their /sync's
// device_lists.changed names alice: local ones through A's syncapi, B's through the
// m.device_list_update EDU and B's syncapi. The next iteration starts once all have seen
// it. Reported: p50/p99 and the slowest (all-) delay of each group, A's CPU time per
// iteration (user and system, less sensitive to other load than the delays), and A's and
// B's peak RSS (VmHWM, the whole run). Full size (issue 9): -fanout-rooms 200 -fanout-users 500.
func BenchmarkDeviceListFanOut(b *testing.B) {
	benchEngines(b, func(b *testing.B, start func(testing.TB) *fedServer) {
		sa, sb := start(b), start(b)
		ctx, cancel := context.WithCancel(context.Background())
		var watchers sync.WaitGroup
		// The long-polls end before the servers stop (cleanup): a server waits for them.
		defer watchers.Wait()
		defer cancel()
		setup := time.Now()
		alice := benchClient(b, sa.URL(), "alice")
		rooms := make([]id.RoomID, *benchFanRooms)
		for i := range rooms {
			created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
			if err != nil {
				b.Fatal(err)
			}
			rooms[i] = created.RoomID
		}
		local := fanOutRooms(b, sa.URL(), "mate", *benchFanUsers, rooms, string(sa.name))
		remote := fanOutRooms(b, sb.URL(), "far", *benchFanRemote, rooms, string(sa.name))
		b.Logf("%d rooms, %d local and %d remote room-mates in %s", len(rooms), len(local), len(remote), time.Since(setup).Round(time.Millisecond))
		watch := func(cs []*mautrix.Client) []*listWatcher {
			ws := make([]*listWatcher, len(cs))
			for i, c := range cs {
				ws[i] = watchDeviceList(ctx, &watchers, c, alice.UserID)
			}
			for _, w := range ws {
				<-w.ready
			}
			return ws
		}
		wl, wr := watch(local), watch(remote)
		// Warm up twice: every watcher is long-polling, and B, which fetches alice's whole
		// list after her first update (and announces that fetch too), holds a fresh copy.
		for range 2 {
			begin := time.Now()
			benchLogin(b, sa.URL(), "alice")
			waitAll(b, wl, begin, "warm-up, local")
			waitAll(b, wr, begin, "warm-up, remote")
		}
		var latL, latR, allL, allR []time.Duration
		cpuA := cpuSeconds(b, sa.cmd.Process.Pid)
		b.ResetTimer()
		for range b.N {
			begin := time.Now()
			benchLogin(b, sa.URL(), "alice")
			l := waitAll(b, wl, begin, "local")
			r := waitAll(b, wr, begin, "remote")
			latL, latR = append(latL, l...), append(latR, r...)
			allL, allR = append(allL, slices.Max(l)), append(allR, slices.Max(r))
		}
		b.StopTimer()
		b.ReportMetric((cpuSeconds(b, sa.cmd.Process.Pid)-cpuA)*1000/float64(b.N), "A-cpu-ms/op")
		peakA, _ := procStatus(b, sa.cmd.Process.Pid)
		peakB, _ := procStatus(b, sb.cmd.Process.Pid)
		reportRanks(b, latL, "local-")
		reportRanks(b, latR, "remote-")
		b.ReportMetric(float64(slices.Max(allL).Microseconds())/1000, "local-all-ms")
		b.ReportMetric(float64(slices.Max(allR).Microseconds())/1000, "remote-all-ms")
		b.ReportMetric(peakA, "A-rss-peak-MiB")
		b.ReportMetric(peakB, "B-rss-peak-MiB")
		b.ReportMetric(0, "ns/op")
	})
}
