package types

import (
	"slices"
	"testing"
)

// NewState agrees with a state built by With, and Diff lists exactly what changed.
func TestNewStateAndDiff(t *testing.T) {
	var entries []StateEntry
	s := &State{}
	for i := 1; i <= 500; i++ {
		e := StateEntry{StateTuple: StateTuple{Type: TypeNID(i % 7), Key: StateKeyNID(i)}, Event: EventNID(i)}
		entries = append(entries, e)
		s = s.With(e.StateTuple, e.Event)
	}
	built := NewState(entries)
	if a, r := s.Diff(built); len(a) != 0 || len(r) != 0 {
		t.Fatalf("NewState differs from With: added %v removed %v", a, r)
	}
	changed := StateTuple{Type: 3, Key: 10}
	gone := StateTuple{Type: 4, Key: 11}
	fresh := StateTuple{Type: 9, Key: 9}
	next := s.With(changed, 1000).With(gone, 0).With(fresh, 1001)
	added, removed := s.Diff(next)
	slices.SortFunc(added, func(a, b StateEntry) int { return int(a.Event - b.Event) })
	slices.SortFunc(removed, func(a, b StateEntry) int { return int(a.Event - b.Event) })
	if len(added) != 2 || added[0].Event != 1000 || added[1].Event != 1001 {
		t.Fatalf("added %v", added)
	}
	if len(removed) != 2 || removed[0].Event != 10 || removed[1].Event != 11 {
		t.Fatalf("removed %v", removed)
	}
}
