// Compile-time checks (run by `npm test` through `tsc -p test/types`): each @ts-expect-error must meet an error,
// or tsc fails with "Unused '@ts-expect-error' directive". They show that the variant registry cannot be left
// incomplete: a variant without an entry, or a new kind of transform without its case, does not compile.
import type { Variant } from '../../src/config/types';
import { unreachable, VARIANT_TABLE, type QkTransform, type VariantDefinition } from '../../src/model/variants';

type Registry<V extends string> = { readonly [K in V]: VariantDefinition };

// A table that lacks one of today's variants is not a registry.
// @ts-expect-error qk-norm has no entry
export const missingEntry: Registry<Variant> = { baseline: VARIANT_TABLE.baseline, 'qk-clip': VARIANT_TABLE['qk-clip'] };

// A fourth variant named in the config's union but given no entry: the registry's own type rejects today's table.
// @ts-expect-error the table has no entry for qk-fourth
export const fourth: Registry<Variant | 'qk-fourth'> = VARIANT_TABLE;

// An entry must fill every field.
// @ts-expect-error afterStep is missing
export const partial: VariantDefinition = { summary: 'x', qkTransform: 'none', caches: ['latent'] };

// A new transform reaches `unreachable` in a switch that handles only today's cases.
export function transformCase(t: QkTransform | 'new-transform'): void {
  switch (t) {
    case 'none':
    case 'qk-norm':
      return;
    default:
      // @ts-expect-error 'new-transform' is not never
      unreachable(t);
  }
}

// The registry is declared as exactly the mapped type over Variant (not a looser Record), which is what makes a
// variant added to the config's union without an entry a compile error in src/model/variants.ts itself.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
export const tableIsTotal: Same<typeof VARIANT_TABLE, Registry<Variant>> = true;
