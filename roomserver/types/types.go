// Package types holds the roomserver's numeric identifiers and state representation. They
// never leave the roomserver: other components see room, event and user IDs only.
package types

import (
	"encoding/binary"
	"errors"
	"sort"
)

// RoomNID is a room's numeric ID in the roomserver database.
type RoomNID int64

// EventNID is an event's numeric ID.
type EventNID int64

// TypeNID is an event type's numeric ID.
type TypeNID int64

// StateKeyNID is a state key's numeric ID.
type StateKeyNID int64

// SnapshotNID names a stored state snapshot: a full room state, shared by every event
// that has that state.
type SnapshotNID int64

// BlockNID names a stored state block: one bucket of a snapshot, shared by every snapshot
// that did not change that bucket.
type BlockNID int64

// Buckets is how many blocks a snapshot is split into. Changing one piece of state rewrites
// one block, so a membership change in a room with 100,000 members writes about 1/64 of
// its state.
const Buckets = 64

// StateTuple is a (type, state key) pair in numeric form.
type StateTuple struct {
	Type TypeNID
	Key  StateKeyNID
}

// Bucket is the block a tuple lives in.
func (t StateTuple) Bucket() int {
	h := uint64(t.Type)*0x9E3779B97F4A7C15 ^ uint64(t.Key)*0xC2B2AE3D27D4EB4F
	h ^= h >> 29
	return int(h % Buckets)
}

// StateEntry is one piece of state: the event that holds a tuple.
type StateEntry struct {
	StateTuple
	Event EventNID
}

// Block is one bucket of state entries, sorted by tuple. NID is 0 until it is stored.
type Block struct {
	NID     BlockNID
	Entries []StateEntry
}

// State is a whole room state as buckets of blocks. It is copy-on-write: With returns a
// new State sharing every block it did not change, so states can be kept per event cheaply.
type State struct {
	Blocks [Buckets]*Block
}

func less(a, b StateTuple) bool {
	if a.Type != b.Type {
		return a.Type < b.Type
	}
	return a.Key < b.Key
}

// Lookup returns the event holding t, or 0.
func (s *State) Lookup(t StateTuple) EventNID {
	b := s.Blocks[t.Bucket()]
	if b == nil {
		return 0
	}
	i := sort.Search(len(b.Entries), func(i int) bool { return !less(b.Entries[i].StateTuple, t) })
	if i < len(b.Entries) && b.Entries[i].StateTuple == t {
		return b.Entries[i].Event
	}
	return 0
}

// With returns a copy of s where t is held by ev (or removed when ev is 0). The changed
// block gets NID 0: it must be stored before the state is.
func (s *State) With(t StateTuple, ev EventNID) *State {
	n := *s
	old := s.Blocks[t.Bucket()]
	var entries []StateEntry
	if old != nil {
		entries = old.Entries
	}
	i := sort.Search(len(entries), func(i int) bool { return !less(entries[i].StateTuple, t) })
	found := i < len(entries) && entries[i].StateTuple == t
	next := make([]StateEntry, 0, len(entries)+1)
	next = append(next, entries[:i]...)
	if ev != 0 {
		next = append(next, StateEntry{StateTuple: t, Event: ev})
	}
	if found {
		i++
	}
	next = append(next, entries[i:]...)
	if len(next) == 0 {
		n.Blocks[t.Bucket()] = nil
	} else {
		n.Blocks[t.Bucket()] = &Block{Entries: next}
	}
	return &n
}

// NewState builds a state from entries (one per tuple; a later entry for the same tuple
// wins). Its blocks have NID 0 until stored.
func NewState(entries []StateEntry) *State {
	byTuple := make(map[StateTuple]EventNID, len(entries))
	for _, e := range entries {
		byTuple[e.StateTuple] = e.Event
	}
	var buckets [Buckets][]StateEntry
	for t, ev := range byTuple {
		buckets[t.Bucket()] = append(buckets[t.Bucket()], StateEntry{StateTuple: t, Event: ev})
	}
	s := &State{}
	for i, b := range buckets {
		if len(b) == 0 {
			continue
		}
		sort.Slice(b, func(x, y int) bool { return less(b[x].StateTuple, b[y].StateTuple) })
		s.Blocks[i] = &Block{Entries: b}
	}
	return s
}

// Diff lists what changes from s to next: entries of next that s lacks or holds with
// another event (added), and entries of s that next replaces or lacks (removed).
// Shared blocks are skipped.
func (s *State) Diff(next *State) (added, removed []StateEntry) {
	for i := range s.Blocks {
		a, b := s.Blocks[i], next.Blocks[i]
		if a == b {
			continue
		}
		var ae, be []StateEntry
		if a != nil {
			ae = a.Entries
		}
		if b != nil {
			be = b.Entries
		}
		x, y := 0, 0
		for x < len(ae) || y < len(be) {
			switch {
			case y >= len(be) || (x < len(ae) && less(ae[x].StateTuple, be[y].StateTuple)):
				removed = append(removed, ae[x])
				x++
			case x >= len(ae) || less(be[y].StateTuple, ae[x].StateTuple):
				added = append(added, be[y])
				y++
			default:
				if ae[x].Event != be[y].Event {
					removed = append(removed, ae[x])
					added = append(added, be[y])
				}
				x++
				y++
			}
		}
	}
	return added, removed
}

// Entries lists every entry of the state.
func (s *State) Entries() []StateEntry {
	var out []StateEntry
	for _, b := range s.Blocks {
		if b != nil {
			out = append(out, b.Entries...)
		}
	}
	return out
}

// Len is the number of entries.
func (s *State) Len() int {
	n := 0
	for _, b := range s.Blocks {
		if b != nil {
			n += len(b.Entries)
		}
	}
	return n
}

// EncodeEntries packs sorted entries as unsigned varints, three per entry.
func EncodeEntries(entries []StateEntry) []byte {
	buf := make([]byte, 0, len(entries)*9)
	for _, e := range entries {
		buf = binary.AppendUvarint(buf, uint64(e.Type))
		buf = binary.AppendUvarint(buf, uint64(e.Key))
		buf = binary.AppendUvarint(buf, uint64(e.Event))
	}
	return buf
}

// DecodeEntries reverses EncodeEntries.
func DecodeEntries(b []byte) ([]StateEntry, error) {
	var out []StateEntry
	for len(b) > 0 {
		var v [3]uint64
		for i := range v {
			x, n := binary.Uvarint(b)
			if n <= 0 {
				return nil, errors.New("corrupt state block")
			}
			v[i], b = x, b[n:]
		}
		out = append(out, StateEntry{StateTuple: StateTuple{Type: TypeNID(v[0]), Key: StateKeyNID(v[1])}, Event: EventNID(v[2])})
	}
	return out, nil
}

// EncodeBlockNIDs packs a snapshot's block list (0 for an empty bucket).
func EncodeBlockNIDs(blocks [Buckets]BlockNID) []byte {
	buf := make([]byte, 0, Buckets*3)
	for _, b := range blocks {
		buf = binary.AppendUvarint(buf, uint64(b))
	}
	return buf
}

// DecodeBlockNIDs reverses EncodeBlockNIDs.
func DecodeBlockNIDs(b []byte) ([Buckets]BlockNID, error) {
	var out [Buckets]BlockNID
	for i := range out {
		x, n := binary.Uvarint(b)
		if n <= 0 {
			return out, errors.New("corrupt state snapshot")
		}
		out[i], b = BlockNID(x), b[n:]
	}
	return out, nil
}
