package syncapi_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// BenchmarkUserDirectorySearch is POST /user_directory/search over loopback HTTP on SQLite
// with 10,000 users in the directory: 100 rooms of 100 members, 10 of them public; the
// searcher is in 5 of the private rooms. The directory's rows are written straight into its
// tables (what the room log's consumer would have written for those joins), which keeps
// the set-up to seconds; the search path is the real one. Each iteration runs four
// searches: a display name word shared by 500 users, a user ID prefix matching 100, one
// full user ID and a term matching nobody. It reports the 50th and 99th percentile of
// one search.
func BenchmarkUserDirectorySearch(b *testing.B) {
	db := benchDB(b)
	h := start(b, db)
	alice := h.user("alice")
	names := []string{"Anna", "Bruno", "Chloé", "Dmitri", "Élodie", "Farid", "Greta", "Hiro", "Ines", "Jonas",
		"Kofi", "Lena", "Mateo", "Nora", "Omar", "Priya", "Quentin", "Rosa", "Sven", "Tariq"}
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	insert := func(room, user, name string) {
		if _, err := tx.ExecContext(ctx, `INSERT INTO syncapi_user_directory (room_id, user_id, display_name, avatar_url, search_text)
			VALUES ($1, $2, $3, '', $4)`, room, user, name, user+"\n"+name); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < 10000; i++ {
		room := fmt.Sprintf("!room%03d:%s", i/100, serverName)
		name := fmt.Sprintf("%s %05d", names[i%len(names)], i)
		insert(room, fmt.Sprintf("@user%05d:%s", i, serverName), name)
	}
	for r := 0; r < 100; r++ {
		room := fmt.Sprintf("!room%03d:%s", r, serverName)
		if r < 10 {
			if _, err := tx.ExecContext(ctx, "INSERT INTO syncapi_user_directory_public (room_id) VALUES ($1)", room); err != nil {
				b.Fatal(err)
			}
		} else if r < 15 {
			insert(room, alice, "alice")
		}
	}
	if err = tx.Commit(); err != nil {
		b.Fatal(err)
	}
	terms := []string{"anna", "user012", "@user01234:" + serverName, "nobody-here"}
	for i, want := range []int{10, 10, 1, 0} {
		if got := h.searchDirectory(alice, terms[i]); len(got) != want {
			b.Fatalf("%q finds %d users", terms[i], len(got))
		}
	}
	var lat []time.Duration
	b.ResetTimer()
	for b.Loop() {
		for _, term := range terms {
			t0 := time.Now()
			h.searchDirectory(alice, term)
			lat = append(lat, time.Since(t0))
		}
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
}
