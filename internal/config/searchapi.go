package config

import "regexp"

// SearchAPI configures the search reader, which indexes room messages, names and topics
// and serves POST /search.
type SearchAPI struct {
	Database DatabaseOptions `yaml:"database"`
	// Listen is where the polylith's searchapi process serves /search.
	Listen      string      `yaml:"listen"`
	InternalAPI InternalAPI `yaml:"internal_api"`
	// TextSearchConfig is the PostgreSQL text search configuration words are normalised
	// with: "simple" (lower case, no stemming, no stop words) works for every language;
	// "english", "german"... stem and drop stop words of one language. It applies to text
	// indexed after a change.
	TextSearchConfig string `yaml:"text_search_config"`
	// Tokenizer is the SQLite FTS5 tokenizer: "unicode61 remove_diacritics 2" (the default:
	// Unicode words, accents ignored), "porter unicode61" (English stemming) or "trigram"
	// (substrings, for languages written without spaces). It is fixed when the index is
	// created.
	Tokenizer string `yaml:"tokenizer"`
}

func defaultSearchAPI() SearchAPI {
	return SearchAPI{
		Listen: ":8076", InternalAPI: InternalAPI{Listen: ":7782", Connect: "http://searchapi:7782"},
		TextSearchConfig: "simple", Tokenizer: "unicode61 remove_diacritics 2",
	}
}

var (
	textSearchConfigPattern = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	tokenizerPattern        = regexp.MustCompile(`^[a-z][a-z0-9_]*( [a-z0-9_]+)*$`)
)

func (s *SearchAPI) verify(bad func(path, problem string)) {
	if !textSearchConfigPattern.MatchString(s.TextSearchConfig) {
		bad("search_api.text_search_config", "must be the name of a PostgreSQL text search configuration, such as simple or english")
	}
	if !tokenizerPattern.MatchString(s.Tokenizer) {
		bad("search_api.tokenizer", "must be an FTS5 tokenizer with its arguments, such as unicode61 remove_diacritics 2")
	}
}
