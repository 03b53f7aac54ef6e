package run

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// value is a vars-file value after templating: a YAML scalar, list or mapping that remembers
// where it was written, so later type errors can name file:line.
type value struct {
	pos   string    // "file:line"
	kind  yaml.Kind // ScalarNode, SequenceNode or MappingNode
	tag   string    // scalars: !!str, !!int, !!float, !!bool or !!null
	text  string    // scalars: the text as written (or as interpolated)
	items []*value  // sequences
	keys  []string  // mappings: keys in file order
	vals  map[string]*value
}

func (v *value) isNull() bool { return v == nil || (v.kind == yaml.ScalarNode && v.tag == "!!null") }

// kindName names a value's kind for messages.
func (v *value) kindName() string {
	switch {
	case v.isNull():
		return "empty"
	case v.kind == yaml.SequenceNode:
		return "a list"
	case v.kind == yaml.MappingNode:
		return "a mapping"
	}
	switch v.tag {
	case "!!int", "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	}
	return "a string"
}

// variable is one top-level key of the merged vars files.
type variable struct {
	file  string
	node  *yaml.Node
	state int // unresolved, resolving, resolved
	val   *value
	err   error
}

const (
	unresolved = iota
	resolving
	resolved
)

// resolver resolves `{{ name }}` templates lazily, the way Ansible does: a variable is
// templated when something reads it, against the merged variables, so a later file's `tag`
// changes the image refs written in an earlier file. Only plain variable substitution is
// supported; filters, lookups, expressions and Jinja statements are errors.
type resolver struct {
	vars    map[string]*variable
	builtin map[string]string // magic variables: playbook_dir
	stack   []string          // variables being resolved, for cycle messages
}

// lookup returns the resolved value of the top-level variable name; site and path say who
// asked, for the error when name is undefined or part of a cycle.
func (r *resolver) lookup(name, site, path string) (*value, error) {
	if s, ok := r.builtin[name]; ok {
		return &value{kind: yaml.ScalarNode, tag: "!!str", text: s}, nil
	}
	v, ok := r.vars[name]
	if !ok {
		return nil, fmt.Errorf("%s: %s: undefined variable %q", site, path, name)
	}
	switch v.state {
	case resolving:
		return nil, r.cycle(name)
	case resolved:
		return v.val, v.err
	}
	v.state = resolving
	r.stack = append(r.stack, name)
	v.val, v.err = r.resolve(v.node, v.file, name)
	r.stack = r.stack[:len(r.stack)-1]
	v.state = resolved
	return v.val, v.err
}

// cycle reports the cycle closed by a reference to name, which is being resolved. It is
// reported at the first variable of the cycle that a user's file sets (the built-in
// defaults only close cycles a user opened), and the chain starts there.
func (r *resolver) cycle(name string) error {
	i := len(r.stack) - 1
	for i > 0 && r.stack[i] != name {
		i--
	}
	loop := r.stack[i:] // loop[0] == name
	start := 0
	for j, n := range loop {
		if r.vars[n].file != DefaultsName {
			start = j
			break
		}
	}
	chain := append(append(append([]string{}, loop[start:]...), loop[:start]...), loop[start])
	v := r.vars[loop[start]]
	return fmt.Errorf("%s: %s: template cycle: %s", position(v.file, v.node), loop[start], strings.Join(chain, " -> "))
}

// position is "file:line" of a node, or just DefaultsName for the built-in defaults.
func position(file string, n *yaml.Node) string {
	if file == DefaultsName {
		return file
	}
	return fmt.Sprintf("%s:%d", file, n.Line)
}

// resolve templates node (written in file) into a value; path names it in messages.
func (r *resolver) resolve(n *yaml.Node, file, path string) (*value, error) {
	pos := position(file, n)
	switch n.Kind {
	case yaml.AliasNode:
		return r.resolve(n.Alias, file, path)
	case yaml.SequenceNode:
		out := &value{pos: pos, kind: yaml.SequenceNode}
		for i, item := range n.Content {
			v, err := r.resolve(item, file, fmt.Sprintf("%s[%d]", path, i))
			if err != nil {
				return nil, err
			}
			out.items = append(out.items, v)
		}
		return out, nil
	case yaml.MappingNode:
		ps, err := mappingPairs(n, file)
		if err != nil {
			return nil, err
		}
		out := &value{pos: pos, kind: yaml.MappingNode, vals: map[string]*value{}}
		for _, p := range ps {
			v, err := r.resolve(p.val, file, path+"."+p.key)
			if err != nil {
				return nil, err
			}
			if _, dup := out.vals[p.key]; !dup {
				out.keys = append(out.keys, p.key)
			}
			out.vals[p.key] = v
		}
		return out, nil
	case yaml.ScalarNode:
		switch tag := n.ShortTag(); tag {
		case "!unsafe": // Ansible's marker for "never template this"
			return &value{pos: pos, kind: yaml.ScalarNode, tag: "!!str", text: n.Value}, nil
		case "!!str":
			return r.resolveString(n.Value, pos, path)
		case "!!int", "!!float", "!!bool", "!!null", "!!timestamp", "!!binary":
			if tag == "!!timestamp" || tag == "!!binary" {
				tag = "!!str"
			}
			return &value{pos: pos, kind: yaml.ScalarNode, tag: tag, text: n.Value}, nil
		case "!vault":
			return nil, fmt.Errorf("%s: %s: vault-encrypted values are not supported", pos, path)
		default:
			return nil, fmt.Errorf("%s: %s: unsupported YAML tag %s", pos, path, tag)
		}
	}
	return nil, fmt.Errorf("%s: %s: unexpected YAML node", pos, path)
}

// plainVariable is what Jinja accepts as a bare variable name.
var plainVariable = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// lookupCall is the start of an Ansible lookup: lookup(...), query(...), q(...).
var lookupCall = regexp.MustCompile(`^(lookup|query|q)\s*\(`)

// resolveString templates one string scalar written at pos. A string that is exactly one
// `{{ name }}` takes the referenced value whole, keeping its type (as Ansible does for
// `cpus: "{{ n }}"` or a list); anything else is string interpolation.
func (r *resolver) resolveString(s, pos, path string) (*value, error) {
	if !strings.Contains(s, "{{") && !strings.Contains(s, "{%") && !strings.Contains(s, "{#") {
		return &value{pos: pos, kind: yaml.ScalarNode, tag: "!!str", text: s}, nil
	}
	var b strings.Builder
	rest := s
	for {
		i := templateStart(rest)
		if i < 0 {
			b.WriteString(rest)
			break
		}
		b.WriteString(rest[:i])
		rest = rest[i:]
		switch rest[:2] {
		case "{%":
			return nil, fmt.Errorf("%s: %s: Jinja statements are not supported: %q", pos, path, upTo(rest, "%}"))
		case "{#":
			return nil, fmt.Errorf("%s: %s: Jinja comments are not supported: %q", pos, path, upTo(rest, "#}"))
		}
		end := strings.Index(rest[2:], "}}")
		if end < 0 {
			return nil, fmt.Errorf("%s: %s: unterminated template: %q", pos, path, rest)
		}
		expr := rest[:end+4]
		inner := strings.TrimSpace(rest[2 : end+2])
		rest = rest[end+4:]
		switch {
		case inner == "":
			return nil, fmt.Errorf("%s: %s: empty template: %q", pos, path, expr)
		case strings.Contains(inner, "|"):
			return nil, fmt.Errorf("%s: %s: filters are not supported: %q", pos, path, expr)
		case lookupCall.MatchString(inner):
			return nil, fmt.Errorf("%s: %s: lookups are not supported: %q", pos, path, expr)
		case !plainVariable.MatchString(inner):
			return nil, fmt.Errorf("%s: %s: expressions are not supported: %q", pos, path, expr)
		}
		v, err := r.lookup(inner, pos, path)
		if err != nil {
			return nil, err
		}
		if expr == s { // the whole string: keep the value's type
			if v.kind == yaml.ScalarNode {
				c := *v
				c.pos = pos
				return &c, nil
			}
			return v, nil
		}
		text, err := interpolated(v)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %q is %s, which cannot be part of a string", pos, path, expr, v.kindName())
		}
		b.WriteString(text)
	}
	return &value{pos: pos, kind: yaml.ScalarNode, tag: "!!str", text: b.String()}, nil
}

// templateStart is the index of the first "{{", "{%" or "{#" in s, or -1.
func templateStart(s string) int {
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '{' && (s[i+1] == '{' || s[i+1] == '%' || s[i+1] == '#') {
			return i
		}
	}
	return -1
}

// upTo is s up to and including the first end marker, or all of s.
func upTo(s, end string) string {
	if i := strings.Index(s, end); i >= 0 {
		return s[:i+len(end)]
	}
	return s
}

// interpolated renders a scalar as Jinja under Ansible would inside a string: Python's str()
// of the YAML value, with None as "" (Ansible's finalize).
func interpolated(v *value) (string, error) {
	if v.kind != yaml.ScalarNode {
		return "", fmt.Errorf("not a scalar")
	}
	switch v.tag {
	case "!!null":
		return "", nil
	case "!!bool":
		if b, err := strconv.ParseBool(strings.ToLower(v.text)); err == nil && b {
			return "True", nil
		}
		return "False", nil
	case "!!int":
		if n, err := parseYAMLInt(v.text); err == nil {
			return strconv.FormatInt(n, 10), nil
		}
	}
	return v.text, nil
}

// parseYAMLInt reads a YAML integer as written: 2048, +5, 0x800, 0o17, 1_000.
func parseYAMLInt(s string) (int64, error) {
	return strconv.ParseInt(strings.ReplaceAll(s, "_", ""), 0, 64)
}

// pair is one key and value of a YAML mapping.
type pair struct {
	key     string
	keyNode *yaml.Node
	val     *yaml.Node
	merged  bool // came in through a << merge key
}

// mappingPairs lists n's keys and values with YAML merge keys (`<<: *anchor`) expanded:
// keys written in the mapping win over merged ones. Repeated keys are all returned, in
// order; callers keep the last (PyYAML's behaviour).
func mappingPairs(n *yaml.Node, file string) ([]pair, error) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	var merged, own []pair
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.ShortTag() != "!!merge" {
			own = append(own, pair{key: k.Value, keyNode: k, val: v})
			continue
		}
		sources := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			sources = v.Content
		}
		// Earlier sources win over later ones; callers keep the last of repeated keys.
		for j := len(sources) - 1; j >= 0; j-- {
			src := sources[j]
			for src.Kind == yaml.AliasNode {
				src = src.Alias
			}
			if src.Kind != yaml.MappingNode {
				return nil, fmt.Errorf("%s:%d: merge key << needs a mapping or a list of mappings", file, src.Line)
			}
			ps, err := mappingPairs(src, file)
			if err != nil {
				return nil, err
			}
			for _, p := range ps {
				p.merged = true
				merged = append(merged, p)
			}
		}
	}
	return append(merged, own...), nil
}
