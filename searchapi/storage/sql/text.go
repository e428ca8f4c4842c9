package sql

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/matrix-org/dendrite/internal/sqlutil"
)

// textIndex is the only engine-specific SQL of the search reader: the full-text table,
// writing to it, and the match. PostgreSQL keeps a tsvector per event under a GIN index
// and ranks with ts_rank; SQLite keeps a contentless FTS5 table and ranks with bm25. Both
// get text already split into words by storage.Tokenize, and both match every word, the
// last one as a prefix too. The match is a common table expression "m" of (id, rank),
// higher ranks better, on the query text as $1: the newest {window} matching events that
// pass {filters} (conditions on the events table "e"), newest first, so that a word found
// in most messages costs a bounded amount of ranking.
type textIndex struct {
	create []string
	insert string
	delete string
	match  string
	query  func(words []string) string
}

// namePattern is what a text search configuration or tokenizer may look like: it goes into
// SQL text (DDL takes no parameters), so nothing else is accepted.
var namePattern = regexp.MustCompile(`^[a-z][a-z0-9_]*( [a-z0-9_]+)*$`)

// validName reports whether s is a usable text search configuration (PostgreSQL) or
// tokenizer (SQLite) name.
func validName(s string) bool {
	return namePattern.MatchString(s)
}

func newTextIndex(engine sqlutil.Engine, o Options) (*textIndex, error) {
	if engine == sqlutil.Postgres {
		if !validName(o.TextSearchConfig) || strings.Contains(o.TextSearchConfig, " ") {
			return nil, fmt.Errorf("invalid text search configuration %q", o.TextSearchConfig)
		}
		cfg := "'" + o.TextSearchConfig + "'::regconfig"
		return &textIndex{
			create: []string{
				`CREATE TABLE IF NOT EXISTS searchapi_text (id BIGINT PRIMARY KEY, tsv TSVECTOR NOT NULL)`,
				`CREATE INDEX IF NOT EXISTS searchapi_text_tsv ON searchapi_text USING GIN (tsv)`,
			},
			insert: `INSERT INTO searchapi_text (id, tsv) VALUES ($1, to_tsvector(` + cfg + `, $2)) ON CONFLICT (id) DO NOTHING`,
			delete: `DELETE FROM searchapi_text WHERE id = $1`,
			match: `WITH m AS (SELECT e.id, ts_rank(t.tsv, q)::FLOAT8 AS rank FROM to_tsquery(` + cfg + `, $1) q
				CROSS JOIN searchapi_text t JOIN searchapi_events e ON e.id = t.id WHERE t.tsv @@ q AND {filters}
				ORDER BY t.id DESC LIMIT {window})`,
			query: func(words []string) string {
				// Words hold letters, digits and marks only: quoting cannot be escaped.
				terms := make([]string, len(words))
				for i, w := range words {
					terms[i] = "'" + w + "'"
				}
				terms[len(terms)-1] += ":*"
				return strings.Join(terms, " & ")
			},
		}, nil
	}
	if !validName(o.Tokenizer) {
		return nil, fmt.Errorf("invalid FTS5 tokenizer %q", o.Tokenizer)
	}
	return &textIndex{
		create: []string{`CREATE VIRTUAL TABLE IF NOT EXISTS searchapi_text USING fts5(words, content='', contentless_delete=1,
			tokenize='` + o.Tokenizer + `')`},
		insert: `INSERT INTO searchapi_text (rowid, words) VALUES ($1, $2)`,
		delete: `DELETE FROM searchapi_text WHERE rowid = $1`,
		// MATERIALIZED keeps bm25() in the CTE: FTS5 refuses it in an outer WHERE. FTS5
		// walks its matches by rowid, newest first, and the LIMIT stops the walk, so bm25()
		// runs for the window only; CROSS JOIN looks each event up by its key.
		match: `WITH m AS MATERIALIZED (SELECT e.id, -bm25(searchapi_text) AS rank FROM searchapi_text
			CROSS JOIN searchapi_events e WHERE searchapi_text MATCH $1 AND e.id = searchapi_text.rowid AND {filters}
			ORDER BY searchapi_text.rowid DESC LIMIT {window})`,
		query: func(words []string) string {
			terms := make([]string, len(words))
			for i, w := range words {
				terms[i] = `"` + w + `"`
			}
			terms[len(terms)-1] += "*"
			return strings.Join(terms, " ")
		},
	}, nil
}
