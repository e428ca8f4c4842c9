package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/test"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// benchConfig is added to the benchmark servers' config: cheap password hashing, so a
// thousand accounts register in seconds.
const benchConfig = "user_api:\n  bcrypt_cost: 4\n"

// benchEngines runs fn once per database engine, with a function that starts a server on it.
func benchEngines(b *testing.B, fn func(b *testing.B, start func(testing.TB) *fedServer)) {
	b.Run("sqlite", func(b *testing.B) {
		fn(b, func(t testing.TB) *fedServer { return startFedServerWith(t, "", benchConfig) })
	})
	b.Run("postgres", func(b *testing.B) {
		fn(b, func(t testing.TB) *fedServer { return startFedServerWith(t, test.PostgresDSN(t), benchConfig) })
	})
}

// benchClient registers a user whose client keeps enough idle connections for concurrent
// requests (the default transport keeps 2 per host and reconnects for the others).
func benchClient(b testing.TB, url, name string) *mautrix.Client {
	c := e2e.Register(b, url, name)
	c.Client = &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	return c
}

// roomFollower long-polls /sync for one user and records, for one room, every message's
// body with the time it was seen. It follows a limited timeline as a client does (spec
// "Syncing"): the events between the last sync and the timeline's prev_batch are read with
// /messages and come before the timeline's, so a gap loses nothing, while an event the
// server lost, repeated or misplaced still shows in bodies. gaps describes each limited
// incremental sync, err is the first /messages failure.
type roomFollower struct {
	mu     sync.Mutex
	room   id.RoomID
	bodies []string
	seenAt map[string]time.Time
	gaps   []string
	err    error
}

func follow(ctx context.Context, c *mautrix.Client, room id.RoomID) *roomFollower {
	f := &roomFollower{room: room, seenAt: map[string]time.Time{}}
	first := make(chan struct{})
	go func() {
		since, present := "", false
		for ctx.Err() == nil {
			res, err := c.SyncRequest(ctx, 30000, since, `{"room":{"timeline":{"limit":1000}}}`, false, "")
			if err != nil {
				continue
			}
			var evs []*event.Event
			gap := ""
			if r := res.Rooms.Join[room]; r != nil {
				evs = r.Timeline.Events
				if since != "" && r.Timeline.Limited {
					missed, err := gapEvents(ctx, c, room, r.Timeline.PrevBatch, since)
					if err != nil && ctx.Err() == nil {
						f.fail(fmt.Errorf("/messages from prev_batch %s to %s: %w", r.Timeline.PrevBatch, since, err))
					}
					oldest := ""
					if len(evs) > 0 {
						oldest = evs[0].Type.Type
					}
					gap = fmt.Sprintf("since %s, next_batch %s, prev_batch %s, room in an earlier sync %v: %d timeline events from %s, %d events (%d messages) in the gap",
						since, res.NextBatch, r.Timeline.PrevBatch, present, len(evs), oldest, len(missed), countMessages(missed))
					evs = append(missed, evs...)
				}
				present = true
			}
			at := time.Now()
			f.mu.Lock()
			if gap != "" {
				f.gaps = append(f.gaps, gap)
			}
			for _, e := range evs {
				if e.Type != event.EventMessage {
					continue
				}
				body := fmt.Sprint(e.Content.Raw["body"])
				f.bodies = append(f.bodies, body)
				if _, ok := f.seenAt[body]; !ok {
					f.seenAt[body] = at
				}
			}
			f.mu.Unlock()
			if since == "" {
				close(first)
			}
			since = res.NextBatch
		}
	}()
	<-first
	return f
}

// gapEvents reads, oldest first, the room's events after since up to prevBatch: /messages
// backward from prevBatch to since, page by page.
func gapEvents(ctx context.Context, c *mautrix.Client, room id.RoomID, prevBatch, since string) ([]*event.Event, error) {
	var out []*event.Event
	for from := prevBatch; ; {
		res, err := c.Messages(ctx, room, from, since, mautrix.DirectionBackward, nil, 1000)
		if err != nil {
			return out, err
		}
		out = append(out, res.Chunk...)
		if res.End == "" || len(res.Chunk) == 0 {
			break
		}
		from = res.End
	}
	slices.Reverse(out)
	return out, nil
}

func countMessages(evs []*event.Event) int {
	n := 0
	for _, e := range evs {
		if e.Type == event.EventMessage {
			n++
		}
	}
	return n
}

func (f *roomFollower) fail(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err == nil {
		f.err = err
	}
}

// waitFor waits until the follower has seen every body, and returns when the last arrived.
func (f *roomFollower) waitFor(b testing.TB, want []string, timeout time.Duration) time.Time {
	b.Helper()
	deadline := time.Now().Add(timeout)
	for {
		f.mu.Lock()
		var last time.Time
		n := 0
		for _, body := range want {
			if at, ok := f.seenAt[body]; ok {
				n++
				if at.After(last) {
					last = at
				}
			}
		}
		f.mu.Unlock()
		if n == len(want) {
			return last
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d of %d messages arrived within %s", n, len(want), timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// messages returns the bodies seen, the gaps followed and the first failure.
func (f *roomFollower) messages() ([]string, []string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.bodies), slices.Clone(f.gaps), f.err
}

func reportPercentiles(b *testing.B, lat []time.Duration, prefix string) {
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(p(0.5), prefix+"p50-ms")
	b.ReportMetric(p(0.99), prefix+"p99-ms")
}

var benchInFlight = flag.Int("inflight", 8, "BenchmarkFederationThroughput: sends in flight on A")

// BenchmarkFederationThroughput: two monolith processes over loopback TLS, a room with a
// user on each; A's user sends b.N messages with 8 requests in flight (-inflight); the clock runs until
// the last one is in B's user's /sync. Reported: PDUs/s end to end, the send rate on A, and
// each message's delivery time (PUT sent on A -> seen in B's /sync). B's user must see every
// message exactly once, in A's order; a limited sync is followed with /messages, as a client
// fills the gap, and counted (B-limited-syncs). Run with a fixed count,
// e.g. -benchtime 2000x: each run starts its own servers.
func BenchmarkFederationThroughput(b *testing.B) {
	benchEngines(b, func(b *testing.B, start func(testing.TB) *fedServer) {
		sa, sb := start(b), start(b)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		alice, bob := benchClient(b, sa.URL(), "alice"), benchClient(b, sb.URL(), "bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		if err != nil {
			b.Fatal(err)
		}
		room := created.RoomID
		if _, err = bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{string(sa.name)}}); err != nil {
			b.Fatal(err)
		}
		fb, fa := follow(ctx, bob, room), follow(ctx, alice, room)
		// Warm up: B has A's key, A's sender has a connection to B.
		if _, err = alice.SendText(ctx, room, "warm-up"); err != nil {
			b.Fatal(err)
		}
		fb.waitFor(b, []string{"warm-up"}, time.Minute)

		bodies := make([]string, b.N)
		sentAt := make([]time.Time, b.N)
		for i := range bodies {
			bodies[i] = fmt.Sprint("m", i)
		}
		b.ResetTimer()
		begin := time.Now()
		var g errgroup.Group
		g.SetLimit(*benchInFlight)
		for i := range bodies {
			g.Go(func() error {
				sentAt[i] = time.Now()
				_, err := alice.SendText(ctx, room, bodies[i])
				return err
			})
		}
		if err = g.Wait(); err != nil {
			b.Fatal(err)
		}
		sent := time.Since(begin)
		last := fb.waitFor(b, bodies, 5*time.Minute)
		b.StopTimer()
		b.ReportMetric(float64(b.N)/last.Sub(begin).Seconds(), "pdus/s")
		b.ReportMetric(float64(b.N)/sent.Seconds(), "sent-msg/s")
		lat := make([]time.Duration, b.N)
		fb.mu.Lock()
		for i, body := range bodies {
			lat[i] = fb.seenAt[body].Sub(sentAt[i])
		}
		fb.mu.Unlock()
		reportPercentiles(b, lat, "deliver-")

		// Exactly once, in A's order, a limited sync's gap (read with /messages) included.
		fa.waitFor(b, bodies, time.Minute)
		gotB, gapsB, errB := fb.messages()
		gotA, gapsA, errA := fa.messages()
		for _, g := range gapsB {
			b.Logf("B's sync was limited: %s", g)
		}
		for _, g := range gapsA {
			b.Logf("A's sync was limited: %s", g)
		}
		if len(gapsB) > 0 {
			b.Logf("B's sync API answered %d requests while behind the log", strings.Count(sb.logs.String(), "behind the log"))
		}
		b.ReportMetric(float64(len(gapsB)), "B-limited-syncs")
		if errB != nil || errA != nil {
			b.Errorf("following a limited sync: B: %v, A: %v", errB, errA)
		}
		if !slices.Equal(gotA, gotB) {
			b.Errorf("B's timeline (%d messages) differs from A's (%d)", len(gotB), len(gotA))
		}
		if len(gotB) != b.N+1 {
			b.Errorf("B saw %d messages, want %d", len(gotB), b.N+1)
		}
	})
}

// procStatus reads a process's memory figures (kB) from /proc: VmHWM (peak RSS) and VmRSS.
func procStatus(b testing.TB, pid int) (peak, rss float64) {
	b.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close() // nolint: errcheck // read-only
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
		switch k {
		case "VmHWM":
			peak = kb / 1024
		case "VmRSS":
			rss = kb / 1024
		}
	}
	return peak, rss
}

var benchMembers = flag.Int("members", 1000, "BenchmarkRemoteJoinLargeRoom: the room's members on A")

// BenchmarkRemoteJoinLargeRoom: a room of 1,000 users (-members) on A; each iteration starts a new
// server B (process) whose user joins the room through A. Reported: the POST /join's wall
// time, the time until B's user's /sync holds the room with every member, and B's RSS
// before the join and its peak (VmHWM) after it. Run with e.g. -benchtime 3x.
func BenchmarkRemoteJoinLargeRoom(b *testing.B) {
	members := *benchMembers
	benchEngines(b, func(b *testing.B, start func(testing.TB) *fedServer) {
		sa := start(b)
		setup := time.Now()
		_, room := e2e.UsersInRoom(b, sa.URL(), "member", members)
		b.Logf("%d members joined on A in %s", members, time.Since(setup).Round(time.Millisecond))
		ctx := context.Background()
		var joinT, syncT, base, peak float64
		b.ResetTimer()
		for i := range b.N {
			b.StopTimer()
			sb := start(b)
			bob := benchClient(b, sb.URL(), fmt.Sprint("bob", i))
			_, baseRSS := procStatus(b, sb.cmd.Process.Pid)
			b.StartTimer()
			begin := time.Now()
			if _, err := bob.JoinRoom(ctx, room.String(), &mautrix.ReqJoinRoom{Via: []string{string(sa.name)}}); err != nil {
				b.Fatal(err)
			}
			joined := time.Since(begin)
			var synced time.Duration
			for {
				res, err := bob.SyncRequest(ctx, 0, "", "", false, "")
				if err != nil {
					b.Fatal(err)
				}
				n := 0
				if r := res.Rooms.Join[room]; r != nil {
					for _, e := range append(r.State.Events, r.Timeline.Events...) {
						if e.Type == event.StateMember && e.Content.Raw["membership"] == "join" {
							n++
						}
					}
				}
				if n >= members+1 {
					synced = time.Since(begin)
					break
				}
				if time.Since(begin) > 5*time.Minute {
					b.Fatalf("B's sync holds %d members", n)
				}
				time.Sleep(10 * time.Millisecond)
			}
			b.StopTimer()
			peakRSS, _ := procStatus(b, sb.cmd.Process.Pid)
			joinT += float64(joined.Milliseconds())
			syncT += float64(synced.Milliseconds())
			base += baseRSS
			peak += peakRSS
			sb.stop()
			b.StartTimer()
		}
		n := float64(b.N)
		b.ReportMetric(joinT/n, "join-ms")
		b.ReportMetric(syncT/n, "sync-ms")
		b.ReportMetric(base/n, "B-rss-before-MiB")
		b.ReportMetric(peak/n, "B-rss-peak-MiB")
		b.ReportMetric(0, "ns/op")
	})
}
