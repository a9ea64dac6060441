// Checks a KEDA ScaledObject example: it validates against KEDA's schema, it scales a
// ChatRoomSet through the scale subresource, and every chatflow metric its queries read is one
// the operations reference lists (a renamed metric would leave the trigger reading nothing).
import { readFileSync } from "node:fs";
import yaml from "js-yaml";
import { ScaledObject } from "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject";

const [example, reference] = process.argv.slice(2);
const documented = readFileSync(reference, "utf8");
const objects = yaml.loadAll(readFileSync(example, "utf8")).filter(Boolean);
const scaled = objects.filter((o) => o.kind === "ScaledObject");
if (scaled.length === 0) throw new Error(`${example}: no ScaledObject`);
for (const o of scaled) {
  new ScaledObject(o).validate();
  const target = o.spec.scaleTargetRef;
  if (target.apiVersion !== "chatflow.dev/v1alpha1" || target.kind !== "ChatRoomSet") {
    throw new Error(`${o.metadata.name}: scales ${target.apiVersion} ${target.kind}, not a ChatRoomSet`);
  }
  for (const t of o.spec.triggers) {
    const names = (t.metadata?.query ?? "").match(/chatflow_[a-z_]+/g) ?? [];
    if (t.type === "prometheus" && names.length === 0) {
      throw new Error(`${o.metadata.name}: a prometheus trigger that reads no chatflow metric`);
    }
    for (const name of names) {
      // The reference lists a family once, its siblings as `_suffix` after it.
      const base = name.replace(/_total$/, "");
      const short = "`_" + base.split("_").slice(2).join("_");
      if (!documented.includes(name) && !documented.includes(base) && !documented.includes(short)) {
        throw new Error(`${o.metadata.name}: ${name} is not a metric docs/operations.md lists`);
      }
    }
  }
  console.log(`${o.metadata.name}: valid ScaledObject for ChatRoomSet ${target.name}, ${o.spec.triggers.length} triggers`);
}
