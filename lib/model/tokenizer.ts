/**
 * Text ↔ token ids for a model folder: tokenizer.json through @huggingface/tokenizers
 * (pure JS, same ids as the Rust library for byte-level BPE) and chat templates from
 * tokenizer_config.json through @huggingface/jinja.
 */
import * as fs from 'fs';
import * as path from 'path';
import { Tokenizer } from '@huggingface/tokenizers';
import { Template } from '@huggingface/jinja';
import { RouterTuningError } from '../errors';

export class TokenizerError extends RouterTuningError {
  constructor(message: string) {
    super('RT_ERR_TOKENIZER', message);
    this.name = 'TokenizerError';
  }
}

export interface ChatMessage {
  role: string;
  content: string;
}

function readJson(file: string, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new TokenizerError(`${file}: cannot read ${what} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    const v = JSON.parse(text);
    if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('expected a JSON object');
    return v;
  } catch (e) {
    throw new TokenizerError(`${file}: ${what} is not valid JSON (${(e as Error).message})`);
  }
}

export class TextTokenizer {
  private readonly tok: Tokenizer;
  private readonly template?: Template;
  readonly bosToken?: string;
  readonly eosToken?: string;
  readonly vocabSize: number;

  constructor(
    tokenizerJson: Record<string, unknown>,
    readonly config: Record<string, unknown>,
    source = 'tokenizer.json',
  ) {
    try {
      this.tok = new Tokenizer(tokenizerJson, config);
    } catch (e) {
      throw new TokenizerError(`${source}: not a usable tokenizer (${(e as Error).message})`);
    }
    const tokenString = (v: unknown): string | undefined =>
      typeof v === 'string' ? v : v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string' ? (v as { content: string }).content : undefined;
    this.bosToken = tokenString(config.bos_token);
    this.eosToken = tokenString(config.eos_token);
    const model = tokenizerJson.model as { vocab?: Record<string, number> | unknown[] } | undefined;
    let size = 0;
    if (model?.vocab && !Array.isArray(model.vocab)) for (const id of Object.values(model.vocab)) size = Math.max(size, id + 1);
    else if (Array.isArray(model?.vocab)) size = model!.vocab.length;
    for (const t of (tokenizerJson.added_tokens as { id: number }[] | undefined) ?? []) size = Math.max(size, t.id + 1);
    this.vocabSize = size;
    const tpl = config.chat_template;
    const text = typeof tpl === 'string' ? tpl : Array.isArray(tpl) ? (tpl.find((t) => t?.name === 'default')?.template as string | undefined) : undefined;
    if (text) {
      try {
        this.template = new Template(text);
      } catch (e) {
        throw new TokenizerError(`${source}: chat_template does not parse (${(e as Error).message})`);
      }
    }
  }

  encode(text: string, opts: { addSpecialTokens?: boolean } = {}): number[] {
    return this.tok.encode(text, { add_special_tokens: opts.addSpecialTokens ?? false }).ids;
  }

  decode(ids: readonly number[], opts: { skipSpecialTokens?: boolean } = {}): string {
    return this.tok.decode([...ids], { skip_special_tokens: opts.skipSpecialTokens ?? false });
  }

  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token);
  }

  get hasChatTemplate(): boolean {
    return this.template !== undefined;
  }

  /** Renders messages with the tokenizer's chat template (error if it has none). */
  applyChatTemplate(messages: ChatMessage[], opts: { addGenerationPrompt?: boolean } = {}): string {
    if (!this.template) throw new TokenizerError('this tokenizer has no chat_template in tokenizer_config.json');
    return this.template.render({
      messages,
      add_generation_prompt: opts.addGenerationPrompt ?? false,
      bos_token: this.bosToken ?? '',
      eos_token: this.eosToken ?? '',
    });
  }
}

/** Loads tokenizer.json (required) and tokenizer_config.json (optional) from a model folder. */
export function loadTokenizer(dir: string): TextTokenizer {
  const file = path.join(dir, 'tokenizer.json');
  if (!fs.existsSync(file)) throw new TokenizerError(`${file}: missing; a model folder needs tokenizer.json`);
  const json = readJson(file, 'tokenizer.json');
  const cfgFile = path.join(dir, 'tokenizer_config.json');
  const config = fs.existsSync(cfgFile) ? readJson(cfgFile, 'tokenizer_config.json') : {};
  return new TextTokenizer(json, config, file);
}
