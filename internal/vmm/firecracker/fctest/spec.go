package fctest

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/go-openapi/loads"
	"github.com/go-openapi/spec"
	"github.com/go-openapi/strfmt"
	"github.com/go-openapi/swag"
	"github.com/go-openapi/validate"
)

// The API descriptions of the modelled releases, as upstream publishes them
// (src/firecracker/swagger/firecracker.yaml at each tag).
//
//go:embed testdata/firecracker-v*.yaml
var specFiles embed.FS

// API is one release's API description: its routes and body schemas, refs expanded.
type API struct {
	Version string
	doc     *loads.Document
	routes  []route
}

type route struct {
	template string   // "/drives/{drive_id}"
	segs     []string // "drives", "{drive_id}"
	item     spec.PathItem
}

var (
	apiMu    sync.Mutex
	apiCache = map[string]*API{}
)

// LoadAPI reads the embedded description of version ("1.6.0"). An API is read-only once
// loaded, so each version is loaded once per process.
func LoadAPI(version string) (*API, error) {
	apiMu.Lock()
	defer apiMu.Unlock()
	if a, ok := apiCache[version]; ok {
		return a, nil
	}
	a, err := loadAPI(version)
	if err == nil {
		apiCache[version] = a
	}
	return a, err
}

func loadAPI(version string) (*API, error) {
	raw, err := specFiles.ReadFile("testdata/firecracker-v" + version + ".yaml")
	if err != nil {
		return nil, fmt.Errorf("fctest: no API description for %s: %w", version, err)
	}
	y, err := swag.BytesToYAMLDoc(raw)
	if err != nil {
		return nil, fmt.Errorf("fctest: API %s: %w", version, err)
	}
	js, err := swag.YAMLToJSON(y)
	if err != nil {
		return nil, fmt.Errorf("fctest: API %s: %w", version, err)
	}
	doc, err := loads.Analyzed(js, "")
	if err != nil {
		return nil, fmt.Errorf("fctest: API %s: %w", version, err)
	}
	if doc, err = doc.Expanded(); err != nil {
		return nil, fmt.Errorf("fctest: API %s: expand: %w", version, err)
	}
	if got := doc.Spec().Info.Version; got != version {
		return nil, fmt.Errorf("fctest: API description %s says version %s", version, got)
	}
	a := &API{Version: version, doc: doc}
	for tmpl, item := range doc.Spec().Paths.Paths {
		a.routes = append(a.routes, route{template: tmpl, segs: split(tmpl), item: item})
	}
	sort.Slice(a.routes, func(i, j int) bool { return a.routes[i].template < a.routes[j].template })
	return a, nil
}

func split(p string) []string {
	p = strings.Trim(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// Operation is a matched request: the operation and its path parameters.
type Operation struct {
	ID     string // operationId, e.g. "putGuestDriveByID"
	Params map[string]string
	op     *spec.Operation
}

// Match finds the operation for method and path (literal segments win over parameters);
// ok is false when the API has none.
func (a *API) Match(method, path string) (Operation, bool) {
	segs := split(path)
	var best *route
	var params map[string]string
	bestLiteral := -1
	for i := range a.routes {
		r := &a.routes[i]
		if len(r.segs) != len(segs) {
			continue
		}
		p := map[string]string{}
		ok, literal := true, 0
		for j, s := range r.segs {
			if strings.HasPrefix(s, "{") && strings.HasSuffix(s, "}") {
				if segs[j] == "" {
					ok = false
					break
				}
				p[s[1:len(s)-1]] = segs[j]
				continue
			}
			if s != segs[j] {
				ok = false
				break
			}
			literal++
		}
		if ok && literal > bestLiteral {
			best, params, bestLiteral = r, p, literal
		}
	}
	if best == nil {
		return Operation{}, false
	}
	var op *spec.Operation
	switch method {
	case "GET":
		op = best.item.Get
	case "PUT":
		op = best.item.Put
	case "PATCH":
		op = best.item.Patch
	case "POST":
		op = best.item.Post
	case "DELETE":
		op = best.item.Delete
	}
	if op == nil {
		return Operation{}, false
	}
	return Operation{ID: op.ID, Params: params, op: op}, true
}

// bodySchema is the operation's body parameter, if it takes one.
func (o Operation) bodySchema() (*spec.Schema, bool) {
	for _, p := range o.op.Parameters {
		if p.In == "body" {
			return p.Schema, p.Required
		}
	}
	return nil, false
}

// ValidateBody checks body against the operation's schema the way Firecracker's serde
// structs do: the schema (types, required fields, enums, bounds) and no unknown fields.
func (o Operation) ValidateBody(body []byte) error {
	schema, required := o.bodySchema()
	empty := len(bytes.TrimSpace(body)) == 0
	switch {
	case schema == nil && empty:
		return nil
	case schema == nil:
		return fmt.Errorf("%s takes no body", o.ID)
	case empty && required:
		return fmt.Errorf("the request body is empty")
	case empty:
		return nil
	}
	var data any
	if err := json.Unmarshal(body, &data); err != nil {
		return fmt.Errorf("An error occurred when deserializing the json body of a request: %v", err)
	}
	if err := denyUnknownFields(schema, data); err != nil {
		return fmt.Errorf("An error occurred when deserializing the json body of a request: %v", err)
	}
	if err := validate.AgainstSchema(schema, data, strfmt.Default); err != nil {
		return fmt.Errorf("An error occurred when deserializing the json body of a request: %v", err)
	}
	return nil
}

// denyUnknownFields is serde's deny_unknown_fields on every object the schema describes,
// except where the schema allows additional properties.
func denyUnknownFields(s *spec.Schema, data any) error {
	if s == nil {
		return nil
	}
	switch v := data.(type) {
	case map[string]any:
		if s.AdditionalProperties != nil && (s.AdditionalProperties.Allows || s.AdditionalProperties.Schema != nil) {
			return nil
		}
		if len(s.Properties) == 0 && !s.Type.Contains("object") {
			return nil
		}
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			p, ok := s.Properties[k]
			if !ok {
				known := make([]string, 0, len(s.Properties))
				for name := range s.Properties {
					known = append(known, "`"+name+"`")
				}
				slices.Sort(known)
				return fmt.Errorf("unknown field `%s`, expected one of %s", k, strings.Join(known, ", "))
			}
			if err := denyUnknownFields(&p, v[k]); err != nil {
				return err
			}
		}
	case []any:
		if s.Items == nil || s.Items.Schema == nil {
			return nil
		}
		for _, e := range v {
			if err := denyUnknownFields(s.Items.Schema, e); err != nil {
				return err
			}
		}
	}
	return nil
}
