package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/matrix-org/dendrite/internal/eventlog"
	"github.com/matrix-org/dendrite/internal/test/e2e"
)

// sentMessage is a message whose send the server acknowledged.
type sentMessage struct {
	body    string
	eventID id.EventID
}

// TestPolylithShardCrash kills, with SIGKILL, first the roomserver shard that owns a room
// and then the syncapi while ten members send 2,000 messages to it; devcluster starts each
// again. Every message whose send was acknowledged is then seen exactly once by every
// member, all in the same order, and each sender's messages in the order sent.
func TestPolylithShardCrash(t *testing.T) {
	t.Parallel()
	d := startCluster(t, e2e.WriteConfig(t, t.TempDir()), 2)
	var victim, syncProc procStatus
	faultRun(t, d, 200, func(ctx context.Context, owner procStatus, acked *atomic.Int32) {
		victim = owner
		for acked.Load() < 300 && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		signalProcess(t, victim, syscall.SIGKILL)
		for acked.Load() < 1000 && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		syncProc = d.process(t, "syncapi")
		signalProcess(t, syncProc, syscall.SIGKILL)
	})
	after := d.waitReady(t, func(st clusterStatus) bool { return true })
	for _, p := range after.Processes {
		if (p.Name == victim.Name && p.Starts <= victim.Starts) || (p.Name == syncProc.Name && p.Starts <= syncProc.Starts) {
			t.Fatalf("%s was not restarted: %+v", p.Name, p)
		}
	}
}

// TestPolylithBrokerCrash kills the Kafka-protocol broker with SIGKILL while ten members
// send 2,000 messages through two roomserver shards; devcluster starts it again on its
// log on disk. With no manual step, every acknowledged message is then seen exactly once
// by every member, in one order; the test logs how long sends took to flow again.
func TestPolylithBrokerCrash(t *testing.T) {
	t.Parallel()
	d := startCluster(t, e2e.WriteConfig(t, t.TempDir()), 2)
	faultRun(t, d, 200, func(ctx context.Context, _ procStatus, acked *atomic.Int32) {
		for acked.Load() < 500 && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		st, _ := d.status()
		killed := time.Now()
		signalProcess(t, st.Broker, syscall.SIGKILL)
		atKill := acked.Load()
		for acked.Load() < atKill+20 && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("broker killed after %d acknowledged sends; 20 more acknowledged %v later", atKill, time.Since(killed).Round(time.Millisecond))
		ready := d.waitReady(t, func(st clusterStatus) bool { return st.Broker.Starts > 1 })
		t.Logf("every process ready %v after the kill (broker started %d times)", time.Since(killed).Round(time.Millisecond), ready.Broker.Starts)
	})
}

// TestPolylithBrokerWipe kills the in-memory broker with SIGKILL while ten members send
// 1,000 messages through two roomserver shards; devcluster starts it again empty, so every
// topic and record is gone. With no manual step, every acknowledged message is then seen
// exactly once by every member, in one order (readers recover what the log lost from the
// roomserver, the roomserver's input goes on with the new log), and sending each message
// again with its transaction ID returns the event ID first acknowledged. The test logs how
// long sends took to flow again and the cluster to be ready.
func TestPolylithBrokerWipe(t *testing.T) {
	t.Parallel()
	d := startCluster(t, e2e.WriteConfig(t, t.TempDir()), 2, "--broker-in-memory")
	run := faultRun(t, d, 100, func(ctx context.Context, _ procStatus, acked *atomic.Int32) {
		for acked.Load() < 300 && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		st, _ := d.status()
		killed := time.Now()
		signalProcess(t, st.Broker, syscall.SIGKILL)
		atKill := acked.Load()
		for acked.Load() < atKill+20 && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		t.Logf("broker wiped after %d acknowledged sends; 20 more acknowledged %v later", atKill, time.Since(killed).Round(time.Millisecond))
		ready := d.waitReady(t, func(st clusterStatus) bool { return st.Broker.Starts > 1 })
		t.Logf("every process ready %v after the wipe (broker started %d times)", time.Since(killed).Round(time.Millisecond), ready.Broker.Starts)
	})
	run.replayTxns(t)
}

// faultResult is what a faultRun sent: each member's acknowledged messages.
type faultResult struct {
	members []*mautrix.Client
	roomID  id.RoomID
	sent    [][]sentMessage
}

// replayTxns sends every acknowledged message again with its transaction ID, the members
// in parallel: each must answer the event ID first acknowledged.
func (r *faultResult) replayTxns(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	errs := make([]error, len(r.members))
	var wg sync.WaitGroup
	for i, m := range r.members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, s := range r.sent[i] {
				got, _, err := e2e.SendRetrying(ctx, m, r.roomID, s.body)
				if err == nil && got != s.eventID {
					err = fmt.Errorf("%s sent again is %s, first acknowledged as %s", s.body, got, s.eventID)
				}
				if err != nil {
					errs[i] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// faultRun has ten members of a new room send perSender messages each, retrying each with
// its transaction ID until acknowledged, while disrupt (given the process of the roomserver
// shard that owns the room, and the count of acknowledged sends) breaks the cluster. Then
// every member must see every acknowledged message exactly once with the event ID its
// sender got, all members in one order, each sender's messages in the order sent.
func faultRun(t *testing.T, d *devcluster, perSender int, disrupt func(ctx context.Context, owner procStatus, acked *atomic.Int32)) *faultResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var names []string
	for i := range 10 {
		names = append(names, fmt.Sprintf("member%d", i))
	}
	var members []*mautrix.Client
	for _, n := range names {
		members = append(members, e2e.Register(t, d.URL(), n))
	}
	created, err := members[0].CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	roomID := created.RoomID
	filter := &mautrix.Filter{Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 1000}}}
	filterIDs, since := make([]string, len(members)), make([]string, len(members))
	for i, m := range members {
		if i > 0 {
			if _, err = m.JoinRoomByID(ctx, roomID); err != nil {
				t.Fatalf("%s joins: %v", names[i], err)
			}
		}
		f, err := m.CreateFilter(ctx, filter)
		if err != nil {
			t.Fatal(err)
		}
		filterIDs[i] = f.FilterID
	}
	for i, m := range members {
		res, err := m.SyncRequest(ctx, 0, "", filterIDs[i], false, "")
		if err != nil {
			t.Fatal(err)
		}
		since[i] = res.NextBatch
	}

	st := d.waitReady(t, func(clusterStatus) bool { return true })
	shard := int(eventlog.PartitionFor([]byte(roomID), st.Partitions)) % st.Shards
	var owner procStatus
	for _, p := range st.Processes {
		if p.Component == "roomserver" && p.Shard == shard {
			owner = p
		}
	}
	if owner.Name == "" {
		t.Fatalf("no shard %d in %+v", shard, st)
	}

	var acked atomic.Int32
	sent := make([][]sentMessage, len(members))
	failures := make([]int, len(members))
	errs := make([]error, len(members))
	var wg sync.WaitGroup
	for i, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range perSender {
				body := fmt.Sprintf("%s-%03d", names[i], n)
				eventID, fails, err := e2e.SendRetrying(ctx, m, roomID, body)
				failures[i] += fails
				if err != nil {
					errs[i] = err
					return
				}
				sent[i] = append(sent[i], sentMessage{body: body, eventID: eventID})
				acked.Add(1)
			}
		}()
	}
	disrupt(ctx, owner, &acked)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("%s: %v", names[i], err)
		}
	}
	d.waitReady(t, func(st clusterStatus) bool { return true })
	t.Logf("retried sends per member: %v", failures)

	total := len(members) * perSender
	var reference []string
	for i, m := range members {
		msgs := e2e.TimelineOf(t, m, filterIDs[i], since[i], roomID, total)
		var order []string
		seen := map[string]id.EventID{}
		for _, e := range msgs {
			body, _ := e.Content.Raw["body"].(string)
			if _, dup := seen[body]; dup {
				t.Fatalf("%s sees %s twice", names[i], body)
			}
			seen[body] = e.ID
			order = append(order, body)
		}
		for j, ms := range sent {
			for _, s := range ms {
				if seen[s.body] != s.eventID {
					t.Fatalf("%s sees %s (acknowledged to %s as %s) as %q", names[i], s.body, names[j], s.eventID, seen[s.body])
				}
			}
		}
		if len(order) != total {
			t.Fatalf("%s sees %d messages, %d were acknowledged", names[i], len(order), total)
		}
		for _, n := range names {
			var own []string
			for _, b := range order {
				if strings.HasPrefix(b, n+"-") {
					own = append(own, b)
				}
			}
			if !slices.IsSorted(own) {
				t.Fatalf("%s sees %s's messages out of order: %v", names[i], n, own)
			}
		}
		if reference == nil {
			reference = order
		} else if !slices.Equal(order, reference) {
			t.Fatalf("%s sees\n%v\n%s sees\n%v", names[0], reference, names[i], order)
		}
	}
	return &faultResult{members: members, roomID: roomID, sent: sent}
}
