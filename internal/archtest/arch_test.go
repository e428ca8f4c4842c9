package archtest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/matrix-org/dendrite"

// components are the top-level directories that are components.
var components = map[string]bool{
	"clientapi": true, "roomserver": true, "syncapi": true, "userapi": true, "federationapi": true,
	"federationsender": true, "eduserver": true, "presenceserver": true, "receiptserver": true, "mediaapi": true, "pushserver": true,
}

// wiring packages may import every component.
func isWiring(dir string) bool {
	return strings.HasPrefix(dir, "cmd/") || dir == "internal/setup"
}

type pkg struct {
	dir     string
	imports map[string]bool
	hasDoc  bool
}

func loadPackages(t *testing.T) map[string]*pkg {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := map[string]*pkg{}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "data" || d.Name() == "testdata") && path != root {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		rel, err := filepath.Rel(root, filepath.Dir(path))
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly|parser.ParseComments)
		if err != nil {
			return err
		}
		p := pkgs[rel]
		if p == nil {
			p = &pkg{dir: rel, imports: map[string]bool{}}
			pkgs[rel] = p
		}
		if f.Doc != nil && strings.TrimSpace(f.Doc.Text()) != "" {
			p.hasDoc = true
		}
		for _, imp := range f.Imports {
			p.imports[strings.Trim(imp.Path.Value, `"`)] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal("repository root not found")
	}
	return pkgs
}

// TestComponentsImportOnlyAPIs enforces that a component reaches another only through its api.
func TestComponentsImportOnlyAPIs(t *testing.T) {
	for _, p := range loadPackages(t) {
		if isWiring(p.dir) {
			continue
		}
		own := strings.SplitN(p.dir, "/", 2)[0]
		for imp := range p.imports {
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			rel := strings.TrimPrefix(imp, module+"/")
			other := strings.SplitN(rel, "/", 2)[0]
			if !components[other] || other == own {
				continue
			}
			if rel != other+"/api" {
				t.Errorf("%s imports %s: components may import only another component's api package", p.dir, rel)
			}
			if strings.HasSuffix(p.dir, "/api") && strings.Contains(rel, "/internal") {
				t.Errorf("%s imports %s: api packages import no implementation", p.dir, rel)
			}
		}
	}
}

// TestEveryPackageDocumented enforces a package comment on every package.
func TestEveryPackageDocumented(t *testing.T) {
	for _, p := range loadPackages(t) {
		if !p.hasDoc {
			t.Errorf("package %s has no package comment", p.dir)
		}
	}
}
