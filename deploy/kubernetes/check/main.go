// Command check reads kiln's Kubernetes manifests the way the API server would: every object is
// decoded strictly with the Kubernetes API types (an unknown or duplicated field is an error, as
// `kubectl apply --validate=strict` makes it), and the references between objects are followed
// (a Deployment naming a Secret key nobody defines would otherwise only fail when a pod starts).
//
// Usage: check DIR, where DIR holds a kustomization.yaml listing every manifest beside it.
// It prints one line per problem and exits 1 when there is any, 0 (with a summary) otherwise.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// kustomization is the part of kustomize's Kustomization this directory uses; anything else in
// the file is refused, so a typo there is caught like one in a manifest.
type kustomization struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Namespace  string            `json:"namespace,omitempty"`
	Resources  []string          `json:"resources"`
	Labels     []kustomizeLabels `json:"labels,omitempty"`
}

type kustomizeLabels struct {
	Pairs            map[string]string `json:"pairs"`
	IncludeSelectors bool              `json:"includeSelectors,omitempty"`
	IncludeTemplates bool              `json:"includeTemplates,omitempty"`
}

// manifest is one decoded object and the file it came from, for messages.
type manifest struct {
	file   string
	object runtime.Object
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: check DIR (a directory with a kustomization.yaml)")
		os.Exit(2)
	}
	manifests, problems := decodeDirectory(os.Args[1])
	problems = append(problems, crossCheck(manifests)...)
	if len(problems) > 0 {
		// Sorted: map iteration above is in no fixed order, the output should be.
		sort.Strings(problems)
		for _, problem := range problems {
			fmt.Println(problem)
		}
		os.Exit(1)
	}
	fmt.Printf("%d objects decoded strictly, references resolved\n", len(manifests))
}

// decoder decodes the API groups kiln's manifests may use, strictly.
func decoder() runtime.Decoder {
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		corev1.AddToScheme, appsv1.AddToScheme, batchv1.AddToScheme,
		networkingv1.AddToScheme, policyv1.AddToScheme,
	} {
		if err := add(scheme); err != nil {
			panic(err)
		}
	}
	return serializer.NewCodecFactory(scheme, serializer.EnableStrict).UniversalDeserializer()
}

// decodeDirectory reads dir's kustomization.yaml and decodes every resource it lists; a YAML
// file beside it that it does not list is a problem too, since kustomize would silently skip it.
func decodeDirectory(dir string) ([]manifest, []string) {
	var problems []string
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, []string{err.Error()}
	}
	var kust kustomization
	if err := yaml.UnmarshalStrict(raw, &kust); err != nil {
		return nil, []string{fmt.Sprintf("kustomization.yaml: %v", err)}
	}
	if kust.APIVersion != "kustomize.config.k8s.io/v1beta1" || kust.Kind != "Kustomization" {
		problems = append(problems, fmt.Sprintf(
			"kustomization.yaml: apiVersion/kind are %q/%q, not kustomize.config.k8s.io/v1beta1/Kustomization",
			kust.APIVersion, kust.Kind))
	}
	listed := map[string]bool{}
	for _, resource := range kust.Resources {
		listed[resource] = true
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, append(problems, err.Error())
	}
	for _, entry := range entries {
		name := entry.Name()
		isYAML := strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml")
		if isYAML && name != "kustomization.yaml" && !listed[name] {
			problems = append(problems, fmt.Sprintf(
				"%s: not listed under resources in kustomization.yaml", name))
		}
	}
	decode := decoder()
	var manifests []manifest
	for _, resource := range kust.Resources {
		objects, err := decodeFile(decode, filepath.Join(dir, resource))
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", resource, err))
			continue
		}
		for _, object := range objects {
			manifests = append(manifests, manifest{file: resource, object: object})
		}
	}
	return manifests, problems
}

// decodeFile decodes every document of a (multi-document) YAML file.
func decodeFile(decode runtime.Decoder, path string) ([]runtime.Object, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	reader := utilyaml.NewYAMLReader(bufio.NewReader(file))
	var objects []runtime.Object
	for number := 1; ; number++ {
		document, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", number, err)
		}
		if len(bytes.TrimSpace(stripComments(document))) == 0 {
			continue
		}
		object, _, err := decode.Decode(document, nil, nil)
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", number, err)
		}
		objects = append(objects, object)
	}
	if len(objects) == 0 {
		return nil, errors.New("holds no object")
	}
	return objects, nil
}

// stripComments drops comment lines, so a document of comments alone counts as empty.
func stripComments(document []byte) []byte {
	var kept [][]byte
	for _, line := range bytes.Split(document, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			kept = append(kept, line)
		}
	}
	return bytes.Join(kept, []byte("\n"))
}

// crossCheck follows the references between objects: ConfigMaps, Secrets and their keys named by
// pod templates, volumes named by mounts, probe ports, Deployment selectors and Service selectors.
func crossCheck(manifests []manifest) []string {
	var problems []string
	configMaps := map[string]map[string]bool{}
	secrets := map[string]map[string]bool{}
	seen := map[string]string{}
	for _, m := range manifests {
		kind := m.object.GetObjectKind().GroupVersionKind().Kind
		name := objectName(m.object)
		if previous, ok := seen[kind+"/"+name]; ok {
			problems = append(problems, fmt.Sprintf("%s: %s %q is also defined in %s", m.file, kind, name, previous))
		}
		seen[kind+"/"+name] = m.file
		switch object := m.object.(type) {
		case *corev1.ConfigMap:
			configMaps[name] = keys(object.Data)
		case *corev1.Secret:
			secrets[name] = keys(object.StringData)
			for key := range object.Data {
				secrets[name][key] = true
			}
		}
	}
	refs := references{configMaps: configMaps, secrets: secrets}
	var templates []podTemplate
	for _, m := range manifests {
		switch object := m.object.(type) {
		case *appsv1.Deployment:
			where := fmt.Sprintf("%s: Deployment %q", m.file, object.Name)
			if object.Spec.Selector == nil || !selects(object.Spec.Selector.MatchLabels, object.Spec.Template.Labels) {
				problems = append(problems, where+": spec.selector does not match the pod template's labels")
			}
			templates = append(templates, podTemplate{where, object.Spec.Template})
		case *batchv1.Job:
			templates = append(templates, podTemplate{fmt.Sprintf("%s: Job %q", m.file, object.Name), object.Spec.Template})
		}
	}
	for _, template := range templates {
		problems = append(problems, refs.checkPod(template.where, template.spec.Spec)...)
	}
	for _, m := range manifests {
		if service, ok := m.object.(*corev1.Service); ok {
			problems = append(problems, checkService(m.file, service, templates)...)
		}
	}
	return problems
}

type podTemplate struct {
	where string
	spec  corev1.PodTemplateSpec
}

// references are the ConfigMaps and Secrets defined, each with its keys.
type references struct {
	configMaps map[string]map[string]bool
	secrets    map[string]map[string]bool
}

func (r references) checkPod(where string, pod corev1.PodSpec) []string {
	var problems []string
	volumes := map[string]bool{}
	for _, volume := range pod.Volumes {
		volumes[volume.Name] = true
		if volume.ConfigMap != nil && !optional(volume.ConfigMap.Optional) {
			problems = append(problems, r.configMap(where, volume.ConfigMap.Name, "")...)
		}
		if volume.Secret != nil && !optional(volume.Secret.Optional) {
			problems = append(problems, r.secret(where, volume.Secret.SecretName, "")...)
		}
	}
	containers := append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...)
	for _, container := range containers {
		in := fmt.Sprintf("%s, container %q", where, container.Name)
		for _, from := range container.EnvFrom {
			if from.ConfigMapRef != nil && !optional(from.ConfigMapRef.Optional) {
				problems = append(problems, r.configMap(in, from.ConfigMapRef.Name, "")...)
			}
			if from.SecretRef != nil && !optional(from.SecretRef.Optional) {
				problems = append(problems, r.secret(in, from.SecretRef.Name, "")...)
			}
		}
		for _, env := range container.Env {
			if env.ValueFrom == nil {
				continue
			}
			if ref := env.ValueFrom.ConfigMapKeyRef; ref != nil && !optional(ref.Optional) {
				problems = append(problems, r.configMap(in, ref.Name, ref.Key)...)
			}
			if ref := env.ValueFrom.SecretKeyRef; ref != nil && !optional(ref.Optional) {
				problems = append(problems, r.secret(in, ref.Name, ref.Key)...)
			}
		}
		for _, mount := range container.VolumeMounts {
			if !volumes[mount.Name] {
				problems = append(problems, fmt.Sprintf("%s: mounts volume %q, which the pod does not define", in, mount.Name))
			}
		}
		for probeName, probe := range map[string]*corev1.Probe{
			"livenessProbe": container.LivenessProbe, "readinessProbe": container.ReadinessProbe,
			"startupProbe": container.StartupProbe,
		} {
			if probe != nil && probe.HTTPGet != nil && !hasPort(container, probe.HTTPGet.Port) {
				problems = append(problems, fmt.Sprintf("%s: %s uses port %s, which the container does not declare",
					in, probeName, probe.HTTPGet.Port.String()))
			}
		}
	}
	return problems
}

func (r references) configMap(where, name, key string) []string {
	return lookUp(where, "ConfigMap", r.configMaps, name, key)
}

func (r references) secret(where, name, key string) []string {
	return lookUp(where, "Secret", r.secrets, name, key)
}

func lookUp(where, kind string, defined map[string]map[string]bool, name, key string) []string {
	keys, ok := defined[name]
	if !ok {
		return []string{fmt.Sprintf("%s: names %s %q, which no manifest defines", where, kind, name)}
	}
	if key != "" && !keys[key] {
		return []string{fmt.Sprintf("%s: names key %q of %s %q, which has no such key", where, key, kind, name)}
	}
	return nil
}

// checkService makes sure a Service selects some pod template and reaches a port it declares.
func checkService(file string, service *corev1.Service, templates []podTemplate) []string {
	where := fmt.Sprintf("%s: Service %q", file, service.Name)
	if len(service.Spec.Selector) == 0 {
		return []string{where + ": has no selector"}
	}
	var problems []string
	matched := false
	for _, template := range templates {
		if !selects(service.Spec.Selector, template.spec.Labels) {
			continue
		}
		matched = true
		for _, port := range service.Spec.Ports {
			target := port.TargetPort
			if target.Type == intstr.Int && target.IntVal == 0 {
				target = intstr.FromInt32(port.Port)
			}
			found := false
			for _, container := range template.spec.Spec.Containers {
				found = found || hasPort(container, target)
			}
			if !found {
				problems = append(problems, fmt.Sprintf("%s: port %q targets %s, which %s does not declare",
					where, port.Name, target.String(), template.where))
			}
		}
	}
	if !matched {
		problems = append(problems, where+": its selector matches no pod template")
	}
	return problems
}

func hasPort(container corev1.Container, port intstr.IntOrString) bool {
	for _, declared := range container.Ports {
		if (port.Type == intstr.String && declared.Name == port.StrVal) ||
			(port.Type == intstr.Int && declared.ContainerPort == port.IntVal) {
			return true
		}
	}
	return false
}

// selects says whether every label of selector is among labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for key, value := range selector {
		if labels[key] != value {
			return false
		}
	}
	return true
}

func optional(flag *bool) bool { return flag != nil && *flag }

func keys(values map[string]string) map[string]bool {
	set := map[string]bool{}
	for key := range values {
		set[key] = true
	}
	return set
}

func objectName(object runtime.Object) string {
	if named, ok := object.(interface{ GetName() string }); ok {
		return named.GetName()
	}
	return "?"
}
