package internal

import (
	"context"
	"sync"
	"time"

	presenceapi "github.com/matrix-org/dendrite/presenceserver/api"
)

// SyncPresenceInterval is how often a syncing user's activity is reported at most, per
// presence: well inside the presenceserver's offline timeout.
const SyncPresenceInterval = 20 * time.Second

// SyncPresence reports to the presenceserver that users are syncing (set_presence),
// at most once per SyncPresenceInterval per user and presence.
type SyncPresence struct {
	Input presenceapi.InputAPI

	mu   sync.Mutex
	last map[string]report
}

type report struct {
	presence string
	at       time.Time
}

// Report tells the presenceserver that userID syncs with set_presence=presence, unless it
// was told so recently. It reports whether it sent a report.
func (p *SyncPresence) Report(ctx context.Context, userID, presence string) (bool, error) {
	now := time.Now()
	p.mu.Lock()
	if p.last == nil {
		p.last = map[string]report{}
	}
	r, ok := p.last[userID]
	if ok && r.presence == presence && now.Sub(r.at) < SyncPresenceInterval {
		p.mu.Unlock()
		return false, nil
	}
	p.last[userID] = report{presence: presence, at: now}
	if len(p.last) > 1024 && len(p.last)%1024 == 0 {
		for u, r := range p.last {
			if now.Sub(r.at) >= SyncPresenceInterval {
				delete(p.last, u)
			}
		}
	}
	p.mu.Unlock()
	err := p.Input.InputPresence(ctx, &presenceapi.InputPresenceEvent{UserID: userID, Kind: presenceapi.InputKindSync, Presence: presence, TS: now.UnixMilli()})
	if err != nil {
		p.mu.Lock()
		delete(p.last, userID)
		p.mu.Unlock()
	}
	return true, err
}
