"""The user-memory routes (`--memory`): `POST /v1/feedback`, `POST /v1/rewards` (`--user-model`),
`GET /v1/users/{id}/history` and `DELETE /v1/users/{id}`."""
from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request

from personalign.serve.schemas import FeedbackBody, RewardsBody
from personalign.serve.state import ServerState, server_state

router = APIRouter(prefix="/v1")
State = Annotated[ServerState, Depends(server_state)]


@router.post("/feedback")
async def feedback(body: FeedbackBody, request: Request, s: State):
    s.require_memory()
    user_id = s.acting_user(request, body.user)
    if user_id is None:
        raise HTTPException(400, "name the user: `user` in the body or an X-User-Id header")
    request_id = body.request_id or request.headers.get("idempotency-key")
    pair = body.chosen is not None or body.rejected is not None
    if pair == (body.comment is not None) or (pair and (body.chosen is None or body.rejected is None)):
        raise HTTPException(400, "send either `chosen` and `rejected` (a preference) or `comment`")
    if pair:
        direction = body.direction
        if direction is None and s.user_model is not None:
            direction = await asyncio.to_thread(s.user_model.direction, body.prompt, body.chosen, body.rejected)
        written = await s.in_memory("add_pair", user_id, body.prompt, body.chosen, body.rejected,
                                    request_id=request_id, direction=direction)
    else:
        written = await s.in_memory("add_comment", user_id, body.prompt, body.comment, request_id=request_id,
                                    direction=body.direction)
    if pair and written.created and s.persona_refresh is not None:
        s.persona_refresh.pair_added(user_id)
    reply = {"object": "feedback", "id": written.item_id, "created": written.created,
             "kind": "pair" if pair else "comment"}
    if s.user_model is not None:  # the user's state is refitted before the reply
        reply["refit"] = await asyncio.to_thread(s.user_model.refit, user_id)
    return reply


@router.post("/rewards")
async def rewards(body: RewardsBody, request: Request, s: State):
    if s.user_model is None:
        raise HTTPException(404, "this server has no user model (start it with --user-model)")
    user_id = s.acting_user(request, body.user)
    scores, pairs = await asyncio.to_thread(s.user_model.rewards, user_id, body.prompt, body.responses)
    return {"object": "rewards", "user": user_id, "rewards": scores, "fitted_on_pairs": pairs,
            "representation": s.user_model.representation}


@router.get("/users/{user_id}/history")
async def history(user_id: str, request: Request, s: State):
    s.acting_user(request, user_id)
    doc = await s.in_memory("history", user_id)
    if doc is None:
        raise HTTPException(404, "no memory for this user")
    return {"object": "user.history", **doc}


@router.delete("/users/{user_id}")
async def delete_user(user_id: str, request: Request, s: State):
    s.acting_user(request, user_id)
    rows = await s.in_memory("delete_user", user_id)
    if s.persona_refresh is not None:
        s.persona_refresh.forget(user_id)
    return {"object": "user.deleted", "deleted": rows > 0, "rows": rows}
