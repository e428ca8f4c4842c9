package internal

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/matrix-org/dendrite/internal/e2ekeys"
	"github.com/matrix-org/dendrite/userapi/api"
	"github.com/matrix-org/dendrite/userapi/storage"
)

// DefaultRemoteTimeout bounds fetching other servers' device lists for one /keys/query when
// the request gives no timeout; MaxRemoteTimeout whatever it gives.
const (
	DefaultRemoteTimeout = 10 * time.Second
	MaxRemoteTimeout     = 30 * time.Second
)

// remoteFetchesAtOnce bounds the device lists one query fetches at the same time.
const remoteFetchesAtOnce = 16

// resyncQueueSize bounds the stale lists waiting for the background resync; when it is
// full a stale list waits for the next query of it.
const resyncQueueSize = 1024

// unreachable is the failures entry of a server whose user's list could not be fetched.
var unreachable = json.RawMessage(`{"status":503,"message":"the server could not be reached"}`)

// errFetchOff is the fetch error when no RemoteDeviceFetcher is configured.
var errFetchOff = errors.New("no remote device fetcher")

// resyncs coordinates fetches of remote device lists: one fetch per user at a time, a
// query that needs a list being fetched waits for that fetch, and lists marked stale by
// device list updates wait in queue for Run. Fetches are numbered in the order they start
// (started): a caller that saw a stale list shares only a fetch that started after it
// looked, since one that started before may hold an older list than the one it saw.
type resyncs struct {
	mu       sync.Mutex
	inFlight map[string]*resyncCall
	started  uint64
	queue    chan string
}

type resyncCall struct {
	number uint64
	done   chan struct{}
	list   *storage.RemoteDeviceList
	err    error
}

// mark is the number of the last fetch started: a caller takes it before it reads a list,
// and passes it to resyncDeviceList.
func (r *resyncs) mark() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.started
}

// MarkStale queues userID's device list for a fetch by RunResyncs; it never blocks (a full
// queue leaves the list stale for the next query of it).
func (u *UserAPI) MarkStale(userID string) {
	select {
	case u.resync.queue <- userID:
	default:
	}
}

// RunResyncs fetches the device lists MarkStale queued until ctx ends. A fetch that fails
// leaves the list stale: the next query of it tries again.
func (u *UserAPI) RunResyncs(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case userID := <-u.resync.queue:
			fctx, cancel := context.WithTimeout(ctx, MaxRemoteTimeout)
			if _, err := u.resyncDeviceList(fctx, userID, u.resync.mark()); err != nil && ctx.Err() == nil {
				u.Logger.WithError(err).WithField("user_id", userID).Warn("resync of a remote device list failed")
			}
			cancel()
		}
	}
}

// resyncDeviceList fetches userID's device list from their server, checks and caches it,
// announces the change, and returns the cached list. Concurrent calls for one user share
// one fetch, if it started after seen (the caller's resyncs.mark, taken before it read the
// stale list); a fetch that started earlier is waited for, and then another one is made.
func (u *UserAPI) resyncDeviceList(ctx context.Context, userID string, seen uint64) (*storage.RemoteDeviceList, error) {
	for {
		u.resync.mu.Lock()
		c, ok := u.resync.inFlight[userID]
		if !ok {
			break
		}
		u.resync.mu.Unlock()
		select {
		case <-c.done:
			if c.number > seen {
				return c.list, c.err
			}
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	u.resync.started++
	c := &resyncCall{number: u.resync.started, done: make(chan struct{})}
	u.resync.inFlight[userID] = c
	u.resync.mu.Unlock()
	c.list, c.err = u.fetchDeviceList(ctx, userID)
	u.resync.mu.Lock()
	delete(u.resync.inFlight, userID)
	u.resync.mu.Unlock()
	close(c.done)
	return c.list, c.err
}

func (u *UserAPI) fetchDeviceList(ctx context.Context, userID string) (*storage.RemoteDeviceList, error) {
	if u.Remote == nil {
		return nil, errFetchOff
	}
	res, err := u.Remote.FetchUserDevices(ctx, userID)
	if err != nil {
		return nil, fmt.Errorf("fetch device list: %w", err)
	}
	if res.UserID != userID {
		return nil, errors.New("the device list answered is of another user")
	}
	l := &storage.RemoteDeviceList{StreamID: res.StreamID, Devices: make([]storage.RemoteDevice, 0, len(res.Devices))}
	seen := map[string]bool{}
	for _, d := range res.Devices {
		if d.DeviceID == "" || seen[d.DeviceID] {
			continue
		}
		seen[d.DeviceID] = true
		l.Devices = append(l.Devices, storage.RemoteDevice{DeviceID: d.DeviceID, DisplayName: d.DisplayName, JSON: e2ekeys.KeepDeviceKeys(d.Keys, userID, d.DeviceID)})
	}
	l.MasterKey, l.SelfSigningKey = e2ekeys.KeepCrossSigningKeys(userID, res.MasterKey, res.SelfSigningKey, nil)
	// The list may differ from what local clients were told: they query it again.
	stream, err := u.DB.ReplaceRemoteDeviceList(ctx, userID, l, u.RemoteChange(userID, func(stream int64) *api.OutputKeyChangeEvent {
		return &api.OutputKeyChangeEvent{Type: api.OutputKeyChangeTypeCrossSigning, CrossSigning: &api.CrossSigningKeyChange{
			UserID: userID, StreamID: stream, MasterKey: l.MasterKey, SelfSigningKey: l.SelfSigningKey}}
	}))
	if err != nil {
		return nil, err
	}
	if stream > 0 {
		u.Announce(ctx)
	}
	cached, err := u.DB.RemoteDeviceLists(ctx, []string{userID})
	if err != nil {
		return nil, err
	}
	if c := cached[userID]; c != nil {
		return c, nil
	}
	return l, nil
}

// PerformMarkRemoteDeviceListsStale implements api.ClientUserAPI.
func (u *UserAPI) PerformMarkRemoteDeviceListsStale(ctx context.Context, req *api.PerformMarkRemoteDeviceListsStaleRequest) (*api.PerformMarkRemoteDeviceListsStaleResponse, error) {
	var users []string
	for _, userID := range req.UserIDs {
		if u.isRemoteUser(userID) {
			users = append(users, userID)
		}
	}
	if err := u.DB.MarkRemoteDeviceListsStale(ctx, users); err != nil {
		return nil, err
	}
	return &api.PerformMarkRemoteDeviceListsStaleResponse{}, nil
}

// QueryRemoteKeys implements api.ClientUserAPI.
func (u *UserAPI) QueryRemoteKeys(ctx context.Context, req *api.QueryRemoteKeysRequest) (*api.QueryRemoteKeysResponse, error) {
	res := &api.QueryRemoteKeysResponse{DeviceKeys: map[string]map[string]json.RawMessage{}, Failures: map[string]json.RawMessage{},
		MasterKeys: map[string]json.RawMessage{}, SelfSigningKeys: map[string]json.RawMessage{}}
	var users []string
	for userID := range req.DeviceKeys {
		if u.isRemoteUser(userID) {
			users = append(users, userID)
		}
	}
	seen := u.resync.mark()
	lists, err := u.DB.RemoteDeviceLists(ctx, users)
	if err != nil {
		return nil, err
	}
	timeout := DefaultRemoteTimeout
	if req.TimeoutMS > 0 {
		timeout = min(time.Duration(req.TimeoutMS)*time.Millisecond, MaxRemoteTimeout)
	}
	fetched := u.fetchAll(ctx, users, lists, seen, timeout)
	for _, userID := range users {
		l := fetched[userID]
		if l == nil {
			l = lists[userID]
		}
		if l == nil {
			_, server, _ := strings.Cut(userID, ":")
			res.Failures[server] = unreachable
			continue
		}
		devs, err := remoteDeviceKeys(userID, l, req.DeviceKeys[userID])
		if err != nil {
			return nil, err
		}
		res.DeviceKeys[userID] = devs
		if l.MasterKey != nil {
			res.MasterKeys[userID] = l.MasterKey
		}
		if l.SelfSigningKey != nil {
			res.SelfSigningKeys[userID] = l.SelfSigningKey
		}
	}
	if err = u.addSignaturesBy(ctx, req.UserID, res.MasterKeys); err != nil {
		return nil, err
	}
	return res, nil
}

// addSignaturesBy adds to other servers' users' master keys (user ID -> key) the
// signatures viewer made on them, which only viewer sees.
func (u *UserAPI) addSignaturesBy(ctx context.Context, viewer string, masterKeys map[string]json.RawMessage) error {
	if viewer == "" || len(masterKeys) == 0 {
		return nil
	}
	sigs, err := u.DB.KeySignaturesBy(ctx, viewer, slices.Collect(maps.Keys(masterKeys)))
	if err != nil || len(sigs) == 0 {
		return err
	}
	byTarget := map[string][]storage.KeySignature{}
	for _, s := range sigs {
		byTarget[s.TargetUserID] = append(byTarget[s.TargetUserID], s)
	}
	for userID, targetSigs := range byTarget {
		k, err := e2ekeys.ParseCrossSigningKey(masterKeys[userID], userID, purposeMaster)
		if err != nil {
			continue // a copy that fails the checks is not kept; nothing to sign
		}
		if masterKeys[userID], err = withSignatures(masterKeys[userID], userID, viewer, k.PublicBase64, targetSigs); err != nil {
			return err
		}
	}
	return nil
}

// fetchAll fetches, within timeout, the lists of the users that are not cached or stale,
// and returns those it got; seen is the resyncs.mark taken before cached was read.
func (u *UserAPI) fetchAll(ctx context.Context, users []string, cached map[string]*storage.RemoteDeviceList, seen uint64, timeout time.Duration) map[string]*storage.RemoteDeviceList {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var mu sync.Mutex
	out := map[string]*storage.RemoteDeviceList{}
	var g errgroup.Group
	g.SetLimit(remoteFetchesAtOnce)
	for _, userID := range users {
		if l := cached[userID]; l != nil && !l.Stale {
			continue
		}
		g.Go(func() error {
			l, err := u.resyncDeviceList(ctx, userID, seen)
			if err != nil {
				u.Logger.WithError(err).WithField("user_id", userID).Debug("could not fetch a remote device list")
				return nil
			}
			mu.Lock()
			defer mu.Unlock()
			out[userID] = l
			return nil
		})
	}
	_ = g.Wait() // every fetch returns nil: a failed one is left out
	return out
}

// remoteDeviceKeys is a cached list's devices among deviceIDs (every device when empty)
// with unsigned.device_display_name. A device whose keys the cache lacks (it has none, or
// none that passed the checks) is answered with its IDs and name alone.
func remoteDeviceKeys(userID string, l *storage.RemoteDeviceList, deviceIDs []string) (map[string]json.RawMessage, error) {
	want := map[string]bool{}
	for _, id := range deviceIDs {
		want[id] = true
	}
	out := map[string]json.RawMessage{}
	for _, d := range l.Devices {
		if len(want) > 0 && !want[d.DeviceID] {
			continue
		}
		obj := map[string]json.RawMessage{}
		if d.JSON != nil {
			if err := json.Unmarshal(d.JSON, &obj); err != nil {
				return nil, fmt.Errorf("cached device keys of %s are not valid: %w", d.DeviceID, err)
			}
		} else {
			ids, err := json.Marshal(map[string]string{"user_id": userID, "device_id": d.DeviceID})
			if err != nil {
				return nil, err
			}
			if err = json.Unmarshal(ids, &obj); err != nil {
				return nil, err
			}
		}
		unsigned := map[string]string{}
		if d.DisplayName != "" {
			unsigned["device_display_name"] = d.DisplayName
		}
		var err error
		if obj["unsigned"], err = json.Marshal(unsigned); err != nil {
			return nil, err
		}
		if out[d.DeviceID], err = json.Marshal(obj); err != nil {
			return nil, err
		}
	}
	return out, nil
}
