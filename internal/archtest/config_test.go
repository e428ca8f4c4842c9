package archtest

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/matrix-org/dendrite/internal/config"
)

const configPkg = module + "/internal/config"

// notReads are the functions of internal/config whose uses of a setting do not make it do
// anything: they define, check or print it.
var notReads = map[string]bool{"Defaults": true, "Verify": true, "verify": true, "DevConfig": true, "Sample": true,
	"defaultFederationAPI": true, "defaultFederationSender": true, "defaultAppServiceAPI": true}

// checkedOnly are settings whose whole effect is Verify's check: version refuses a config of
// another format.
var checkedOnly = map[string]bool{"version": true}

// TestEveryConfigFieldIsUsed: every setting of the config file is read by code that acts on
// it, so no key of the sample config does nothing. The packages that import internal/config
// are type-checked (their dependencies from the compiler's export data) and every field
// selection on a config type outside tests, outside Defaults and Verify, is collected; each
// leaf setting's type and field must be among them. A field of a type shared by several
// sections (DatabaseOptions, InternalAPI) counts once for all of them.
func TestEveryConfigFieldIsUsed(t *testing.T) {
	if testing.Short() {
		t.Skip("builds every package")
	}
	used := usedConfigFields(t)
	for _, s := range settings(reflect.TypeOf(config.Dendrite{}), "") {
		if !used[s.field] && !checkedOnly[s.path] {
			t.Errorf("%s (%s) is in the config but no code reads it: make it work or remove it", s.path, s.field)
		}
	}
}

type setting struct {
	path  string // YAML path, "room_server.input_wait_timeout"
	field string // Go type and field, "RoomServer.InputWaitTimeout"
}

// settings lists the leaf settings under struct type t.
func settings(t reflect.Type, prefix string) []setting {
	var out []setting
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		path := tag
		if prefix != "" {
			path = prefix + "." + tag
		}
		ft := f.Type
		if ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		out = append(out, setting{path: path, field: t.Name() + "." + f.Name})
		if ft.Kind() == reflect.Struct {
			out = out[:len(out)-1]
			out = append(out, settings(ft, path)...)
		}
	}
	return out
}

type listedPackage struct {
	ImportPath string
	Dir        string
	Export     string
	GoFiles    []string
	Imports    []string
	Standard   bool
}

// usedConfigFields returns "Type.Field" for every field of a config type that non-test code
// selects.
func usedConfigFields(t *testing.T) map[string]bool {
	t.Helper()
	cmd := exec.Command("go", "list", "-export", "-deps", "-json=ImportPath,Dir,Export,GoFiles,Imports,Standard", "./...")
	cmd.Dir = "../.."
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	exports := map[string]string{}
	var targets []listedPackage
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var p listedPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		exports[p.ImportPath] = p.Export
		if !p.Standard && (p.ImportPath == configPkg || slices.Contains(p.Imports, configPkg)) {
			targets = append(targets, p)
		}
	}
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		return os.Open(exports[path])
	})
	used := map[string]bool{}
	for _, p := range targets {
		var files []*ast.File
		for _, name := range p.GoFiles {
			f, err := parser.ParseFile(fset, filepath.Join(p.Dir, name), nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		info := &types.Info{Selections: map[*ast.SelectorExpr]*types.Selection{}}
		if _, err := (&types.Config{Importer: imp}).Check(p.ImportPath, fset, files, info); err != nil {
			t.Fatalf("type-check %s: %v", p.ImportPath, err)
		}
		for _, f := range files {
			ast.Inspect(f, func(n ast.Node) bool {
				if fd, ok := n.(*ast.FuncDecl); ok && p.ImportPath == configPkg && notReads[fd.Name.Name] {
					return false
				}
				sel, ok := n.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				if s := info.Selections[sel]; s != nil && s.Kind() == types.FieldVal {
					if name := configTypeName(s.Recv()); name != "" {
						used[name+"."+sel.Sel.Name] = true
					}
				}
				return true
			})
		}
	}
	return used
}

// configTypeName is the name of a (pointer to a) named type of internal/config, else "".
func configTypeName(t types.Type) string {
	if p, ok := t.(*types.Pointer); ok {
		t = p.Elem()
	}
	n, ok := t.(*types.Named)
	if !ok || n.Obj().Pkg() == nil || n.Obj().Pkg().Path() != configPkg {
		return ""
	}
	return n.Obj().Name()
}
