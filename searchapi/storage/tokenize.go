package storage

import (
	"strings"
	"unicode"
)

// Tokenize splits text into lower-case words: runs of letters, digits and combining marks.
// Everything else (punctuation, quotes, full-text operators, SQL metacharacters) only
// separates words. Indexing and queries on both engines go through it, so a word is found
// exactly as it was indexed. At most limit words are returned (no limit when limit <= 0).
func Tokenize(text string, limit int) []string {
	var words []string
	for w := range strings.FieldsFuncSeq(text, func(r rune) bool {
		return !unicode.IsLetter(r) && !unicode.IsDigit(r) && !unicode.IsMark(r)
	}) {
		if limit > 0 && len(words) == limit {
			break
		}
		words = append(words, strings.ToLower(w))
	}
	return words
}

// IndexText is the text the index stores for text: its words, separated by spaces.
func IndexText(text string) string {
	return strings.Join(Tokenize(text, 0), " ")
}
