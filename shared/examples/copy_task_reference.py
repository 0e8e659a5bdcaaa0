"""PyTorch replica of `copy_task.rs`: the same architecture (`tiny`: 4 bidirectional Llama blocks,
d_model 256, 4 heads, SwiGLU 768, RMSNorm, non-interleaved RoPE, untied head, N(0, 0.02) init), the
same SFT masked-diffusion objective (prompt never masked, t stratified over the batch, mask
probability (1 - 1e-3) t + 1e-3, mean cross-entropy over masked tokens) and AdamW (lr `--lr`,
default 5e-4, 50 warm-up steps, cosine decay, weight decay 0.01, clip 1.0), on a fixed 24-token
canvas. Prints the
loss and the one-shot letter accuracy (every answer position masked, argmax) every 100 steps.
With `--time`, times training steps at the given batch and canvas instead (the figure to set
beside `node pretrain`'s seconds per step; `tiny` pretraining uses batch 64 × 48).
Needs `pip install torch`; not part of CI.

    python copy_task_reference.py --steps 600
    python copy_task_reference.py --steps 600 --lr 3e-3   # the old default: stuck on a plateau
    python copy_task_reference.py --steps 2000 --constant-lr --lr 3e-3   # README's lr table
    python copy_task_reference.py --time --steps 25 --batch 64 --len 48
"""
import argparse, math, random, time
import torch, torch.nn as nn, torch.nn.functional as F
ap = argparse.ArgumentParser()
ap.add_argument('--steps', type=int, default=600)
ap.add_argument('--batch', type=int, default=16)
ap.add_argument('--len', type=int, default=24)
ap.add_argument('--time', action='store_true')
ap.add_argument('--lr', type=float, default=5e-4)
ap.add_argument('--constant-lr', action='store_true', help='no cosine decay after the warm-up')
ARGS = ap.parse_args()
torch.manual_seed(0); random.seed(0)
torch.set_num_threads(2)
V=260; MASK=256; BOS=257; EOS=258; L=ARGS.len; D=256; H=4; NL=4; FF=768
def sample():
    w=''.join(random.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(5))
    p=[BOS]+list(f"copy {w} =".encode()); a=list(f" {w}.".encode())
    row=p+a+[EOS]*(L-len(p)-len(a)); return row,len(p)
class RMS(nn.Module):
    def __init__(s,d): super().__init__(); s.w=nn.Parameter(torch.ones(d))
    def forward(s,x): return s.w*x*torch.rsqrt(x.pow(2).mean(-1,keepdim=True)+1e-5)
def rope(x,cos,sin):
    h=x.shape[-1]//2; x1,x2=x[...,:h],x[...,h:]
    return x*torch.cat([cos,cos],-1)+torch.cat([-x2,x1],-1)*torch.cat([sin,sin],-1)
class Block(nn.Module):
    def __init__(s):
        super().__init__(); s.n1=RMS(D); s.n2=RMS(D)
        s.q=nn.Linear(D,D,bias=False); s.k=nn.Linear(D,D,bias=False); s.v=nn.Linear(D,D,bias=False); s.o=nn.Linear(D,D,bias=False)
        s.g=nn.Linear(D,FF,bias=False); s.u=nn.Linear(D,FF,bias=False); s.d=nn.Linear(FF,D,bias=False)
    def forward(s,x,cos,sin):
        B,T,_=x.shape; n=s.n1(x)
        q=s.q(n).view(B,T,H,-1).transpose(1,2); k=s.k(n).view(B,T,H,-1).transpose(1,2); v=s.v(n).view(B,T,H,-1).transpose(1,2)
        q=rope(q,cos,sin); k=rope(k,cos,sin)
        a=F.scaled_dot_product_attention(q,k,v).transpose(1,2).reshape(B,T,D)
        x=x+s.o(a); m=s.n2(x); return x+s.d(F.silu(s.g(m))*s.u(m))
class M(nn.Module):
    def __init__(s):
        super().__init__(); s.e=nn.Embedding(V,D); s.b=nn.ModuleList([Block() for _ in range(NL)]); s.n=RMS(D); s.h=nn.Linear(D,V,bias=False)
        for p in s.parameters():
            if p.dim()==2: nn.init.normal_(p,0,0.02)
        hd=D//H; inv=1/(10000**(torch.arange(0,hd//2)*2/hd)); ang=torch.arange(L)[:,None]*inv[None]
        s.cos=ang.cos(); s.sin=ang.sin()
    def forward(s,ids):
        x=s.e(ids)
        for b in s.b: x=b(x,s.cos,s.sin)
        return s.h(s.n(x))
m=M(); opt=torch.optim.AdamW(m.parameters(),lr=ARGS.lr,weight_decay=0.01,betas=(0.9,0.999))
steps = ARGS.steps
bs = ARGS.batch
ema = None
t0 = time.time()
for step in range(steps+1):
    if ARGS.time and step == 5:
        t0 = time.time()
    lr=ARGS.lr*min(1,(step+1)/50)*(1 if ARGS.constant_lr else 0.5*(1+math.cos(math.pi*step/steps)))
    for g in opt.param_groups: g['lr']=lr
    rows=[sample() for _ in range(bs)]; ids=torch.tensor([r for r,_ in rows]); pl=torch.tensor([p for _,p in rows])
    t=((torch.arange(bs)+torch.rand(bs))/bs)*(1-1e-3)+1e-3
    pos=torch.arange(L)[None]
    msk=(torch.rand(bs,L)<t[:,None])&(pos>=pl[:,None])
    noisy=torch.where(msk,torch.full_like(ids,MASK),ids)
    logits=m(noisy); ce=F.cross_entropy(logits[msk],ids[msk])
    opt.zero_grad(); ce.backward(); torch.nn.utils.clip_grad_norm_(m.parameters(),1.0); opt.step()
    ema=ce.item() if ema is None else 0.95*ema+0.05*ce.item()
    if ARGS.time:
        if step == steps:
            print(f'{(time.time() - t0) / (steps - 4):.3f} s/step at batch {bs} x {L}')
        continue
    if step%100==0:
        with torch.no_grad():
            rows=[sample() for _ in range(64)]; ids=torch.tensor([r for r,_ in rows]); pl=rows[0][1]
            noisy=ids.clone(); noisy[:,pl:]=MASK; pred=m(noisy).argmax(-1)
            acc=(pred[:,pl+1:pl+6]==ids[:,pl+1:pl+6]).float().mean().item()
        print(f"step {step} ema {ema:.4f} one-shot letter acc {acc:.3f}",flush=True)
