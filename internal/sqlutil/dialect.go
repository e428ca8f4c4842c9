package sqlutil

import (
	"reflect"
	"strconv"
	"strings"
)

// Dialect rewrites engine-neutral SQL for one engine.
type Dialect struct {
	Engine Engine
}

// InList expands marker in query (as in "WHERE id IN ({ids})") into placeholders numbered
// after args, and appends the list's elements to args. An empty list matches nothing.
//
// On SQLite the list's placeholders are anonymous ("?") when the parameters before marker
// take exactly len(args) numbers (anonymousFits): SQLite gives an anonymous parameter the
// number after the highest so far, so they then stand for the appended elements. A "$N"
// it looks up in its list of parameter names as it prepares the statement, and again as
// the driver binds each, which is quadratic in the list's length: a 500-element list cost
// six times what it does with "?" (BenchmarkInListSQLite). Otherwise they are "$N", which works
// wherever the query's own parameters stand.
func (d Dialect) InList(query, marker string, args []any, list any) (string, []any) {
	v := reflect.ValueOf(list)
	n := v.Len()
	if n == 0 {
		return strings.Replace(query, marker, "NULL", 1), args
	}
	anonymous := false
	if d.Engine == SQLite {
		if at := strings.Index(query, marker); at >= 0 {
			anonymous = anonymousFits(query[:at], len(args))
		}
	}
	var b strings.Builder
	out := make([]any, len(args), len(args)+n)
	copy(out, args)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		if anonymous {
			b.WriteByte('?')
		} else {
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(len(out) + 1))
		}
		out = append(out, v.Index(i).Interface())
	}
	return strings.Replace(query, marker, b.String(), 1), out
}

// anonymousFits reports whether the parameters in sql, the text before an IN list, take
// exactly n of SQLite's parameter numbers: each distinct "$N" one, each "?" one (a list
// expanded before). Quoted strings and identifiers are passed over.
func anonymousFits(sql string, n int) bool {
	named := map[string]bool{}
	anonymous := 0
	for i := 0; i < len(sql); i++ {
		switch c := sql[i]; c {
		case '\'', '"':
			end := strings.IndexByte(sql[i+1:], c)
			if end < 0 {
				return false
			}
			i += end + 1 // a doubled quote ('') ends one string and opens the next: the same here
		case '?':
			if i+1 < len(sql) && sql[i+1] >= '0' && sql[i+1] <= '9' {
				return false // "?NNN"
			}
			anonymous++
		case '$':
			j := i + 1
			for j < len(sql) && sql[j] >= '0' && sql[j] <= '9' {
				j++
			}
			if j == i+1 {
				return false
			}
			named[sql[i:j]] = true
			i = j - 1
		}
	}
	return len(named)+anonymous == n
}

// Rows is the placeholders of a multi-row VALUES list of rows rows of cols columns,
// "($1, $2), ($3, $4)", numbered from 1, for a statement whose every parameter is one of
// them. On SQLite they are anonymous, "(?, ?), (?, ?)": SQLite keeps "$N" and "?N" in a
// list of parameter names that it searches for each of them as it prepares and again as
// the driver binds each, so preparing and binding an INSERT of a hundred rows of eight
// columns took longer than running it.
func (d Dialect) Rows(rows, cols int) string {
	var b strings.Builder
	b.Grow(rows * cols * 7)
	n := 0
	for r := 0; r < rows; r++ {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for c := 0; c < cols; c++ {
			if c > 0 {
				b.WriteString(", ")
			}
			n++
			if d.Engine == SQLite {
				b.WriteByte('?')
				continue
			}
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		}
		b.WriteByte(')')
	}
	return b.String()
}

// Schema rewrites engine-neutral DDL: {serial} is an auto-increment primary key, {bytes} a
// binary column and {bigint} a 64-bit integer. {without_rowid}, after a CREATE TABLE's
// closing parenthesis, stores a SQLite table in its primary key's B-tree instead of
// beside it (no rowid, no separate index for the key: a table of small rows keyed by
// several columns takes about half the space); PostgreSQL has no such choice, and it
// stands for nothing there.
func (d Dialect) Schema(ddl string) string {
	r := strings.NewReplacer("{serial}", "BIGSERIAL PRIMARY KEY", "{bytes}", "BYTEA", "{bigint}", "BIGINT", "{without_rowid}", "")
	if d.Engine == SQLite {
		r = strings.NewReplacer("{serial}", "INTEGER PRIMARY KEY AUTOINCREMENT", "{bytes}", "BLOB", "{bigint}", "INTEGER",
			"{without_rowid}", "WITHOUT ROWID")
	}
	return r.Replace(ddl)
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, "%", `\%`, "_", `\_`)

// EscapeLike escapes LIKE's wildcards in s, for a pattern used with ESCAPE '\' (the same
// on SQLite and PostgreSQL).
func EscapeLike(s string) string {
	return likeEscaper.Replace(s)
}
