package internal

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/sirupsen/logrus"

	"github.com/matrix-org/dendrite/internal/pushrules"
	"github.com/matrix-org/dendrite/pushserver/storage"
	rsapi "github.com/matrix-org/dendrite/roomserver/api"
)

// Delivery limits: a pusher's head is retried with exponential backoff up to
// maxBackoff, and dropped (counted as a failure) once it has waited giveUpAfter.
const (
	minBackoff   = time.Second
	maxBackoff   = 10 * time.Minute
	giveUpAfter  = 24 * time.Hour
	pollInterval = time.Second
	// minWakeGap is the least time between two looks for due pushes that Wake asks for:
	// the push reader wakes the deliverer after each of its transactions, and a look reads
	// every due push of the queue (thousands in a backlog).
	minWakeGap   = 100 * time.Millisecond
	maxRespBytes = 64 << 10
	// queueBatch is how many pushes of a pusher's queue one read takes.
	queueBatch = 20
	// maxUnacked is how many of a pusher's delivered pushes may wait for their removal
	// from the queue to commit while the pusher's next pushes are sent (and at most how
	// many of its pushes a crash may send twice).
	maxUnacked = 2 * queueBatch
	// eventCacheMax bounds the cache of what a push says about its event.
	eventCacheMax = 1024
)

// Limits bound the deliverer's concurrent sends (push_server.max_deliveries and
// max_deliveries_per_gateway).
type Limits struct {
	// Total is how many pushers are sent to at once.
	Total int
	// PerGateway is how many of them may share one gateway.
	PerGateway int
}

// Deliverer sends the queued pushes to the push gateways: each pusher's queue in order,
// one goroutine per pusher with pushes due, at most Limits.Total at once and
// Limits.PerGateway per gateway, so a slow or failing gateway delays only its own
// pushers (it holds at most PerGateway of the Total), and event processing (which only
// queues) not at all.
type Deliverer struct {
	DB      storage.Database
	Rooms   rsapi.QueryAPI
	Client  *http.Client
	Limits  Limits
	Metrics *Metrics
	Logger  *logrus.Entry

	wake chan struct{}
	// acked are the delivered pushes waiting to leave their queues, and ackWake
	// signals the first of them to commitAcks. While a removal commits (on SQLite, after
	// the push reader's transaction) the next pile up here, at most maxUnacked per pusher.
	ackMu   sync.Mutex
	acked   []ack
	ackWake chan struct{}
	mu      sync.Mutex
	busy    map[storage.PusherKey]bool
	// gateways are the per-gateway semaphores of the gateways with pushers being
	// delivered or waiting, by gateway; an entry goes when its last pusher is done.
	gateways map[string]*gatewaySlots
	// events caches, per event ID, what every push of the event says about it (the
	// event and the room's and sender's names), so that a message to a thousand pushers
	// queries the roomserver once, not a thousand times.
	events map[string]*eventInfo
}

// ack is a delivered push waiting to leave its queue; done receives the outcome.
type ack struct {
	seq  int64
	done chan<- error
}

// eventInfo is what pushes say about an event: the event (nil when the roomserver does
// not have it) and the names of a full-format notification.
type eventInfo struct {
	// ready is closed once the fields below are filled in (or err is set): the pushers
	// of one event, which go out together, share one lookup.
	ready                                  chan struct{}
	err                                    error
	ev                                     gomatrixserverlib.PDU
	roomName, roomAlias, senderDisplayName string
}

// gatewaySlots is one gateway's semaphore and how many pushers hold or wait for it.
type gatewaySlots struct {
	sem   chan struct{}
	users int
}

// NewDeliverer returns a Deliverer; Run starts it. Limits below 1 are 1.
func NewDeliverer(db storage.Database, rooms rsapi.QueryAPI, client *http.Client, limits Limits, m *Metrics, logger *logrus.Entry) *Deliverer {
	limits.Total = max(limits.Total, 1)
	limits.PerGateway = max(limits.PerGateway, 1)
	return &Deliverer{DB: db, Rooms: rooms, Client: client, Limits: limits, Metrics: m, Logger: logger, wake: make(chan struct{}, 1),
		ackWake: make(chan struct{}, 1), busy: map[storage.PusherKey]bool{}, gateways: map[string]*gatewaySlots{},
		events: map[string]*eventInfo{}}
}

// gatewayOf is the gateway a pusher's URL names: its scheme, host and port.
func gatewayOf(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// gateway returns the gateway's semaphore, counting the caller as its user until release.
func (d *Deliverer) gateway(gw string) chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	g := d.gateways[gw]
	if g == nil {
		g = &gatewaySlots{sem: make(chan struct{}, d.Limits.PerGateway)}
		d.gateways[gw] = g
	}
	g.users++
	return g.sem
}

// release ends the caller's use of the gateway's semaphore.
func (d *Deliverer) release(gw string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if g := d.gateways[gw]; g != nil {
		if g.users--; g.users == 0 {
			delete(d.gateways, gw)
		}
	}
}

// Wake makes Run look for due pushes now (after pushes were queued and committed).
func (d *Deliverer) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends, then waits for the sends in flight.
func (d *Deliverer) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		d.commitAcks(ctx)
	}()
	sem := make(chan struct{}, d.Limits.Total)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		looked := time.Now()
		due, err := d.DB.DuePushers(ctx, looked.UnixMilli())
		if err != nil && ctx.Err() == nil {
			d.Logger.WithError(err).Warn("loading due pushes failed")
		}
		for _, p := range due {
			d.mu.Lock()
			skip := d.busy[p.Key]
			d.busy[p.Key] = true
			d.mu.Unlock()
			if skip {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.drainLimited(ctx, p, sem)
				d.mu.Lock()
				delete(d.busy, p.Key)
				d.mu.Unlock()
			}()
		}
		if n, err := d.DB.QueueDepth(ctx); err == nil {
			d.Metrics.queueDepth(n)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-d.wake:
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(time.Until(looked.Add(minWakeGap))):
			}
		case <-tick.C:
		}
	}
}

// drainLimited drains the pusher's queue once it holds a slot of its gateway and then
// one of sem (the overall limit), in that order: a pusher waiting for a busy gateway
// holds no overall slot, so a slow gateway takes at most Limits.PerGateway of them.
func (d *Deliverer) drainLimited(ctx context.Context, p storage.DuePusher, sem chan struct{}) {
	gw := gatewayOf(p.URL)
	gwSem := d.gateway(gw)
	defer d.release(gw)
	select {
	case gwSem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-gwSem }()
	select {
	case sem <- struct{}{}:
	case <-ctx.Done():
		return
	}
	defer func() { <-sem }()
	d.drain(ctx, p.Key)
}

// drain sends the pusher's due pushes in order until its queue is empty, a push fails
// (the queue is postponed), the gateway rejects the push key or ctx ends. It reads the
// queue queueBatch pushes at a time, with the pusher and the user's unread count (the
// badge every push of the batch carries) once per batch, not once per push. The
// delivered pushes leave the queue in the deliverer's shared transactions; drain does
// not wait for those to commit before it reads and sends the next pushes (it reads past
// the last one sent) until maxUnacked are waiting, and waits for them all before it
// returns. On SQLite a commit waits for the push reader's transaction to end: waiting for
// each batch's held a pusher to a batch per reader transaction. A crash before the
// commits sends those pushes again, at most maxUnacked per pusher.
func (d *Deliverer) drain(ctx context.Context, k storage.PusherKey) {
	log := d.Logger.WithFields(logrus.Fields{"user_id": k.UserID, "app_id": k.AppID})
	var pending []<-chan error
	acked := func(n int) bool {
		err := waitAcks(ctx, pending[:n])
		pending = pending[n:]
		if err != nil && ctx.Err() == nil {
			log.WithError(err).Warn("removing delivered pushes from a pusher's queue failed")
		}
		return err == nil
	}
	defer func() { acked(len(pending)) }()
	var after int64
	for ctx.Err() == nil {
		if over := len(pending) + queueBatch - maxUnacked; over > 0 && !acked(over) {
			return
		}
		heads, pusher, err := d.DB.QueueHeads(ctx, k, time.Now().UnixMilli(), after, queueBatch)
		if err != nil {
			log.WithError(err).Warn("loading a pusher's queue failed")
			return
		}
		if len(heads) == 0 {
			return
		}
		unread, err := d.DB.UnreadTotal(ctx, k.UserID)
		if err != nil {
			log.WithError(err).Warn("counting a user's unread notifications failed")
			return
		}
		for i := range heads {
			done, more := d.sendHead(ctx, log, &heads[i], pusher, unread)
			if done != nil {
				pending = append(pending, done)
			}
			if !more {
				return
			}
			after = heads[i].Seq
		}
	}
}

// sendHead sends one push of the pusher's queue and records the outcome: done, when not
// nil, reports the commit of the push's removal from the queue; more false means the
// queue stops here (postponed after a failure, pusher removed, or ctx ended).
func (d *Deliverer) sendHead(ctx context.Context, log *logrus.Entry, head *storage.QueuedPush, pusher *storage.StoredPusher, unread int) (done <-chan error, more bool) {
	now := time.Now()
	rejected, err := d.send(ctx, head, pusher, unread)
	switch {
	case err == nil && rejected:
		d.Metrics.delivered()
		log.Info("push gateway rejected a push key; pusher removed")
		if err := d.DB.RemovePusher(ctx, head.ID); err != nil {
			log.WithError(err).Warn("removing a rejected pusher failed")
		}
		return nil, false
	case err == nil:
		d.Metrics.delivered()
	case now.Sub(time.UnixMilli(head.EnqueuedTS)) > giveUpAfter:
		d.Metrics.failed()
		log.WithError(err).Warn("push dropped after retrying for a day")
	default:
		d.Metrics.failed()
		log.WithError(err).WithField("attempts", head.Attempts+1).Debug("push failed; retrying later")
		if perr := d.DB.Postpone(ctx, head.ID, head.Seq, now.Add(backoff(head.Attempts+1)).UnixMilli()); perr != nil {
			log.WithError(perr).Warn("postponing a pusher's queue failed")
		}
		return nil, false
	}
	ch := make(chan error, 1)
	d.ackMu.Lock()
	d.acked = append(d.acked, ack{seq: head.Seq, done: ch})
	d.ackMu.Unlock()
	select {
	case d.ackWake <- struct{}{}:
	default:
	}
	return ch, true
}

// waitAcks waits until the removals of pending have committed, and returns the first
// error.
func waitAcks(ctx context.Context, pending []<-chan error) error {
	for _, done := range pending {
		select {
		case err := <-done:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// commitAcks removes delivered pushes from the queues until ctx ends: each transaction
// takes every ack waiting when it starts.
func (d *Deliverer) commitAcks(ctx context.Context) {
	for {
		select {
		case <-d.ackWake:
		case <-ctx.Done():
			return
		}
		for {
			d.ackMu.Lock()
			batch := d.acked
			d.acked = nil
			d.ackMu.Unlock()
			if len(batch) == 0 {
				break
			}
			seqs := make([]int64, len(batch))
			for i, a := range batch {
				seqs[i] = a.seq
			}
			err := d.DB.Delivered(ctx, seqs)
			for _, a := range batch {
				a.done <- err
			}
		}
	}
}

// backoff is the wait after the given number of failed attempts.
func backoff(attempts int) time.Duration {
	b := minBackoff
	for i := 1; i < attempts && b < maxBackoff; i++ {
		b *= 2
	}
	return min(b, maxBackoff)
}

// notifyRequest is the body of POST /_matrix/push/v1/notify.
type notifyRequest struct {
	Notification notification `json:"notification"`
}

type notification struct {
	EventID string `json:"event_id,omitempty"`
	// ID repeats EventID. NOTSPEC: not in the push gateway API
	// (https://spec.matrix.org/v1.12/push-gateway-api/#post_matrixpushv1notify), but
	// Synapse sends it and sytest requires it.
	ID                string          `json:"id,omitempty"`
	RoomID            string          `json:"room_id,omitempty"`
	Type              string          `json:"type,omitempty"`
	Sender            string          `json:"sender,omitempty"`
	SenderDisplayName string          `json:"sender_display_name,omitempty"`
	RoomName          string          `json:"room_name,omitempty"`
	RoomAlias         string          `json:"room_alias,omitempty"`
	Content           json.RawMessage `json:"content,omitempty"`
	UserIsTarget      bool            `json:"user_is_target,omitempty"`
	// Membership is a member event's membership. NOTSPEC, as ID.
	Membership string         `json:"membership,omitempty"`
	Prio       string         `json:"prio,omitempty"`
	Counts     notifyCounts   `json:"counts"`
	Devices    []notifyDevice `json:"devices"`
}

type notifyCounts struct {
	Unread int `json:"unread"`
}

type notifyDevice struct {
	AppID     string                     `json:"app_id"`
	PushKey   string                     `json:"pushkey"`
	PushKeyTS int64                      `json:"pushkey_ts,omitempty"`
	Data      map[string]json.RawMessage `json:"data"`
	Tweaks    map[string]json.RawMessage `json:"tweaks,omitempty"`
}

// buildNotification is the notify body for head: the event's fields for the "full"
// format, only its ID, room, priority and counts for "event_id_only", counts alone for a
// badge update.
func (d *Deliverer) buildNotification(ctx context.Context, head *storage.QueuedPush, p *storage.StoredPusher, unread int) (*notification, error) {
	data := map[string]json.RawMessage{}
	if json.Unmarshal(p.Data, &data) != nil {
		data = map[string]json.RawMessage{}
	}
	delete(data, "url")
	var format string
	_ = json.Unmarshal(data["format"], &format) // absent or not a string: the full format
	dev := notifyDevice{AppID: p.AppID, PushKey: p.PushKey, PushKeyTS: p.CreatedTS / 1000, Data: data}
	n := &notification{Counts: notifyCounts{Unread: unread}, Devices: []notifyDevice{dev}}
	if head.EventID == "" {
		return n, nil
	}
	var actions []json.RawMessage
	_ = json.Unmarshal(head.Actions, &actions) // stored by the reader from a valid rule
	outcome := pushrules.Actions(actions)
	if len(outcome.Tweaks) > 0 {
		n.Devices[0].Tweaks = outcome.Tweaks
	}
	n.EventID, n.RoomID, n.Prio = head.EventID, head.RoomID, "low"
	_, sound := outcome.Tweaks["sound"]
	if outcome.Highlight || sound {
		n.Prio = "high"
	}
	info, err := d.eventInfo(ctx, head)
	if err != nil {
		return nil, err
	}
	ev := info.ev
	if ev == nil {
		return n, nil
	}
	if ev.Type() == "m.room.encrypted" {
		n.Prio = "high"
	}
	if format == "event_id_only" {
		return n, nil
	}
	n.ID, n.Type, n.Sender, n.Content = n.EventID, ev.Type(), string(ev.SenderID()), ev.Content()
	if ev.Type() == "m.room.member" && ev.StateKey() != nil {
		n.UserIsTarget = *ev.StateKey() == p.UserID
		var c struct {
			Membership string `json:"membership"`
		}
		_ = json.Unmarshal(ev.Content(), &c) // a member event the roomserver accepted has one
		n.Membership = c.Membership
	}
	n.RoomName, n.RoomAlias, n.SenderDisplayName = info.roomName, info.roomAlias, info.senderDisplayName
	return n, nil
}

// eventInfo is what pushes say about head's event, from the cache or, on a miss, from
// the roomserver.
func (d *Deliverer) eventInfo(ctx context.Context, head *storage.QueuedPush) (*eventInfo, error) {
	d.mu.Lock()
	info, ok := d.events[head.EventID]
	if !ok {
		if len(d.events) >= eventCacheMax {
			d.events = map[string]*eventInfo{}
		}
		info = &eventInfo{ready: make(chan struct{})}
		d.events[head.EventID] = info
	}
	d.mu.Unlock()
	if ok {
		select {
		case <-info.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if info.err != nil {
			return nil, info.err
		}
		return info, nil
	}
	info.err = d.lookUpEvent(ctx, head, info)
	if info.err != nil || info.ev == nil {
		// Failed, or not found: the next push of the event asks again.
		d.mu.Lock()
		if d.events[head.EventID] == info {
			delete(d.events, head.EventID)
		}
		d.mu.Unlock()
	}
	close(info.ready)
	if info.err != nil {
		return nil, info.err
	}
	return info, nil
}

// lookUpEvent fills in info for head's event from the roomserver.
func (d *Deliverer) lookUpEvent(ctx context.Context, head *storage.QueuedPush, info *eventInfo) error {
	res, err := d.Rooms.QueryEventsByID(ctx, &rsapi.QueryEventsByIDRequest{RoomID: head.RoomID, EventIDs: []string{head.EventID}})
	if err != nil {
		return err
	}
	if len(res.Events) == 0 {
		return nil
	}
	ev := res.Events[0]
	n := &notification{RoomID: head.RoomID, Sender: string(ev.SenderID())}
	if err := d.addNames(ctx, n); err != nil {
		return err
	}
	fillFromInviteState(n, ev.Unsigned())
	if n.RoomName == "" {
		// A room without a name is called by its canonical alias, as clients do.
		n.RoomName = n.RoomAlias
	}
	info.ev, info.roomName, info.roomAlias, info.senderDisplayName = ev, n.RoomName, n.RoomAlias, n.SenderDisplayName
	return nil
}

// fillFromInviteState fills in the names the room's current state did not give from the
// stripped state an invite over federation carries in its unsigned invite_room_state:
// for a room this server is not in, that is the only state known here.
func fillFromInviteState(n *notification, unsigned []byte) {
	var u struct {
		InviteRoomState []struct {
			Type     string          `json:"type"`
			StateKey string          `json:"state_key"`
			Content  json.RawMessage `json:"content"`
		} `json:"invite_room_state"`
	}
	if len(unsigned) == 0 || json.Unmarshal(unsigned, &u) != nil {
		return
	}
	for _, e := range u.InviteRoomState {
		var c stateNames
		if json.Unmarshal(e.Content, &c) != nil {
			continue
		}
		switch {
		case e.Type == "m.room.name" && e.StateKey == "" && n.RoomName == "":
			n.RoomName = c.Name
		case e.Type == "m.room.canonical_alias" && e.StateKey == "" && n.RoomAlias == "":
			n.RoomAlias = c.Alias
		case e.Type == "m.room.member" && e.StateKey == n.Sender && n.SenderDisplayName == "":
			n.SenderDisplayName = c.DisplayName
		}
	}
}

// stateNames is what a notification takes from the content of m.room.name,
// m.room.canonical_alias and m.room.member events.
type stateNames struct {
	Name        string `json:"name"`
	Alias       string `json:"alias"`
	DisplayName string `json:"displayname"`
}

// addNames fills in the room's name and canonical alias and the sender's display name
// from the room's current state.
func (d *Deliverer) addNames(ctx context.Context, n *notification) error {
	res, err := d.Rooms.QueryCurrentState(ctx, &rsapi.QueryCurrentStateRequest{RoomID: n.RoomID, Tuples: []rsapi.StateKeyTuple{
		{EventType: "m.room.name"}, {EventType: "m.room.canonical_alias"}, {EventType: "m.room.member", StateKey: n.Sender}}})
	if err != nil {
		return err
	}
	for _, e := range res.StateEvents {
		var c stateNames
		if json.Unmarshal(e.Content(), &c) != nil {
			continue
		}
		switch e.Type() {
		case "m.room.name":
			n.RoomName = c.Name
		case "m.room.canonical_alias":
			n.RoomAlias = c.Alias
		case "m.room.member":
			n.SenderDisplayName = c.DisplayName
		}
	}
	return nil
}

// send posts head to the pusher's gateway; rejected reports that the gateway rejected
// the push key. unread is the badge, the user's unread notifications.
func (d *Deliverer) send(ctx context.Context, head *storage.QueuedPush, p *storage.StoredPusher, unread int) (rejected bool, err error) {
	n, err := d.buildNotification(ctx, head, p, unread)
	if err != nil {
		return false, err
	}
	var data struct {
		URL string `json:"url"`
	}
	if err := json.Unmarshal(p.Data, &data); err != nil || data.URL == "" {
		return true, nil
	}
	body, err := json.Marshal(notifyRequest{Notification: *n})
	if err != nil {
		return false, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, data.URL, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.Client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close() // nolint: errcheck // read below
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxRespBytes))
	if err != nil {
		return false, err
	}
	if resp.StatusCode/100 != 2 {
		return false, fmt.Errorf("push gateway answered %d", resp.StatusCode)
	}
	var answer struct {
		Rejected []string `json:"rejected"`
	}
	_ = json.Unmarshal(raw, &answer) // a body without rejected keys rejects none
	return slices.Contains(answer.Rejected, p.PushKey), nil
}
